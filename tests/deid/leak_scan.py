"""Scanning de-identified datasets for left-over originals (shared by the leak tests)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT", "UI"}
)


@dataclass(frozen=True)
class Occurrence:
    path: str  # e.g. "(0040,A730)[0].(0040,A160)"
    vr: str
    value: str


def walk_values(ds: Dataset, prefix: str = "") -> Iterator[Occurrence]:
    """Every leaf value as text (bytes decoded leniently), at every depth, file meta included."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not prefix:
        yield from walk_values(meta, "meta.")
    for elem in ds:
        path = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                yield from walk_values(item, f"{path}[{index}].")
            continue
        value = elem.value
        if value is None:
            continue
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        for v in values:
            if isinstance(v, bytes):
                text = v.decode("latin-1", "replace")
            else:
                text = str(v)
            if text:
                yield Occurrence(path, elem.VR, text)


def private_tags(ds: Dataset) -> list[str]:
    return [str(elem.tag) for elem in ds.iterall() if elem.tag.is_private]


def find_substrings(ds: Dataset, needles: list[str], *, vrs: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(path, needle) for every needle found (case-insensitive) inside a leaf value."""
    lowered = [(n, n.lower()) for n in needles if n]
    hits = []
    for occ in walk_values(ds):
        if vrs is not None and occ.vr not in vrs:
            continue
        text = occ.value.lower()
        for original, needle in lowered:
            if needle in text:
                hits.append((occ.path, original))
    return hits


def uid_values(ds: Dataset) -> list[tuple[str, str]]:
    return [(occ.path, occ.value) for occ in walk_values(ds) if occ.vr == "UI"]
