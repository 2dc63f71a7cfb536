"""String-valued attack options as enums.

An attack's dataclass fields keep the plain strings its recipe gives (``solver = "torch"``), so
recipes, ``hyperparameters()`` and run fingerprints never change; the attack turns a field into
its :class:`Choice` member where it selects behaviour, and checks it once in ``validate()``
with :meth:`Choice.parse` (a one-line :class:`~robust_vae.core.errors.ConfigError` naming the
valid values).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from robust_vae.core.errors import ConfigError

C = TypeVar("C", bound="Choice")


class Choice(StrEnum):
    """Base class of the option enums: each member's value is the string recipes use."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The valid strings, in declaration order."""
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls: type[C], value: object, what: str) -> C:
        """The member whose value is ``value``; a :class:`ConfigError` ``"<what> must be one of
        ..., got ..."`` for anything else."""
        for member in cls:
            if value == member.value:
                return member
        valid = ", ".join(repr(v) for v in cls.values())
        raise ConfigError(f"{what} must be one of {valid}, got {value!r}")
