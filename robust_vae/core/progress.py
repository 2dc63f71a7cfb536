"""Progress from inside long loops, without the loops knowing who listens.

An attack's optimisation loop calls :func:`step` after each of its steps; whoever runs the
attack (a success matrix, a benchmark) wraps the call in :func:`listen` with a callback that
moves its progress bar. With nobody listening, :func:`step` costs one context-variable read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

StepCallback = Callable[[int, int], None]  # (steps done, total steps) of the current batch

_listener: ContextVar[StepCallback | None] = ContextVar("robust_vae_progress", default=None)


def step(done: int, total: int) -> None:
    """Report that ``done`` of ``total`` steps of the current batch are finished."""
    callback = _listener.get()
    if callback is not None and total > 0:
        callback(min(done, total), total)


@contextmanager
def listen(callback: StepCallback) -> Iterator[None]:
    """Send every :func:`step` made inside the ``with`` block to ``callback``."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)
