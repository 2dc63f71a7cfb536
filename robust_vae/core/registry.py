"""Name → class registries filled by decorators, one per extensible concept.

A registry knows the package whose modules define its entries and imports all of them on
first use, so adding a dataset, model family or attack is one new module whose class carries
``@registry.register(...)``: no list to edit anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robust_vae.core.errors import RobustVAEError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (``"attack"``, ``"model family"``, ``"dataset"``) by name."""

    def __init__(self, kind: str, package: str, error: type[RobustVAEError] = RobustVAEError) -> None:
        self.kind = kind
        self.package = package
        self.error = error
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@FAMILIES.register("vae")``. A name may be registered once."""

        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise RobustVAEError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def discover(self) -> None:
        """Import every module of the package once, so their decorators have run."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{self.package}."):
            importlib.import_module(info.name)

    def names(self) -> list[str]:
        self.discover()
        return list(self._entries)

    def get(self, name: str) -> T:
        """The entry called ``name``, or a one-line error listing the valid names."""
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}: choose one of {', '.join(self._entries)}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self.discover()
        return list(self._entries.items())
