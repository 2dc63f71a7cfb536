"""The classes of a run as its reports show them: the noun, the names and their number K.

A success matrix is K × K with K(K − 1) ordered cells, rows and columns indexed by class index
0..K-1. :class:`ClassLabels` carries what the captions and keys need: the noun of the dataset's
classes ("digit" for MNIST, "shape" for dSprites, "class" when nothing better is known), their
names, and K. Runs record them in ``run.json`` (:meth:`ClassLabels.metadata`); a run written
before they were recorded falls back on its dataset's registry entry, which ``robust_vae.data``
makes known here with :func:`register_lookup` (this layer imports nothing above ``core``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NOUN = "class"
LONG_NAME = 3  # tick labels longer than this many characters are drawn rotated


@dataclass(frozen=True)
class ClassLabels:
    """noun: what one class is ("digit", "shape", "class"); names: the K names in label order
    (empty: unnamed, shown as their index); num_classes: K (None: not known, count the cells)."""

    noun: str = DEFAULT_NOUN
    names: tuple[str, ...] = ()
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.names and len(self.names) != self.num_classes:
            raise ValueError(f"{len(self.names)} class names for {self.num_classes} classes")

    def name(self, index: int) -> str:
        """The name of class ``index`` (its index as text when unnamed)."""
        return self.names[index] if 0 <= index < len(self.names) else str(index)

    @property
    def named(self) -> bool:
        """Whether some class has a name other than its index (then tables need a key)."""
        return any(name != str(i) for i, name in enumerate(self.names))

    def ticks(self, classes: Iterable[int]) -> list[str]:
        """Figure tick labels of ``classes``: their names when named, else their indices."""
        return [self.name(int(c)) if self.named else str(int(c)) for c in classes]

    def rotate_ticks(self, classes: Iterable[int]) -> bool:
        """Whether the tick labels of ``classes`` are long enough to be drawn rotated."""
        return any(len(tick) > LONG_NAME for tick in self.ticks(classes))

    def key(self, classes: Iterable[int] | None = None) -> str:
        """``"Classes: 0 = T-shirt/top, 1 = Trouser, ..."`` for tables indexed by class index;
        ``""`` when the names are the indices (MNIST) or unknown."""
        if not self.named:
            return ""
        shown = range(len(self.names)) if classes is None else sorted({int(c) for c in classes})
        return "Classes: " + ", ".join(f"{c} = {self.name(c)}" for c in shown) + "."

    def metadata(self) -> dict[str, Any]:
        """The ``run.json`` fields: ``num_classes``, ``class_noun`` and ``class_names``."""
        return {"num_classes": self.num_classes, "class_noun": self.noun, "class_names": list(self.names)}


DatasetLookup = Callable[[str], ClassLabels | None]
_LOOKUPS: list[DatasetLookup] = []


def register_lookup(lookup: DatasetLookup) -> None:
    """Make ``lookup`` (dataset name -> its classes, or None when unknown) the answer of
    :func:`for_dataset` (``robust_vae.data`` registers the dataset registry's)."""
    if lookup not in _LOOKUPS:
        _LOOKUPS.append(lookup)


def for_dataset(name: object) -> ClassLabels:
    """The classes of the dataset called ``name`` as the registered lookups know them;
    ``ClassLabels()`` (noun "class", unnamed, K unknown) when none does."""
    if isinstance(name, str) and name:
        for lookup in _LOOKUPS:
            found = lookup(name)
            if found is not None:
                return found
    return ClassLabels()


def from_metadata(*metadata: Mapping[str, Any]) -> ClassLabels:
    """The classes a run's ``run.json`` records (:meth:`ClassLabels.metadata`).

    Each field missing there (a run written before they were recorded) comes from the dataset
    named by the first of ``metadata`` that has a ``dataset`` (``run.json``, then e.g. the
    run's ``config.json``), except K: without ``num_classes`` it stays None, so that the
    caller counts the classes in the cells as before.
    """
    first = metadata[0] if metadata else {}
    noun, names, k = first.get("class_noun"), first.get("class_names"), first.get("num_classes")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        k = None
    if not (isinstance(noun, str) and noun) or not isinstance(names, list):
        dataset = next((m.get("dataset") for m in metadata if m.get("dataset")), None)
        known = for_dataset(dataset)
        noun = noun if isinstance(noun, str) and noun else known.noun
        if not isinstance(names, list):
            names = list(known.names)
    names_tuple = tuple(str(n) for n in names)
    if k is not None and names_tuple and len(names_tuple) != k:
        names_tuple = ()  # names of another class count: show indices rather than wrong names
    return ClassLabels(noun, names_tuple, k)


def shared_classes(labels: Iterable[ClassLabels]) -> ClassLabels:
    """The classes several runs share: the first's when every run agrees, else unnamed "class"."""
    found = list(labels)
    if found and all(f == found[0] for f in found):
        return found[0]
    if found and all(f.noun == found[0].noun for f in found):
        return ClassLabels(found[0].noun)
    return ClassLabels()
