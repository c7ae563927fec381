"""Deterministic, patient-level splits.

A patient's split is a function of a keyed hash of (project slug, patient pseudonym) -- not of a random
generator and not of arrival order -- so re-running gives the same answer and every study of a patient lands in
the same split. With stratification the hash only orders patients; each new patient goes to the split that is
furthest below its target share within the patient's stratum (e.g. manufacturer), which keeps small strata
balanced. Assignments are stored and never revised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from pacslabel.projects.schema import Ratios, Split

SPLIT_ORDER = (Split.TRAIN, Split.VALIDATION, Split.TEST)


def keyed_fraction(*parts: str | int) -> float:
    """A uniform number in [0, 1) from a hash of the parts (stable across processes and versions)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def keyed_hex(*parts: str | int) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def hashed_split(slug: str, pseudonym: str, ratios: Ratios) -> Split:
    """Unstratified: the patient's split follows from the hash alone."""
    point = keyed_fraction(slug, "split", pseudonym)
    cumulative = 0.0
    for split in SPLIT_ORDER:
        cumulative += ratios.get(split)
        if point < cumulative:
            return split
    # Rounding at the very top: the last split with a non-zero share.
    return next(s for s in reversed(SPLIT_ORDER) if ratios.get(s) > 0)


def stratified_split(ratios: Ratios, counts: Mapping[str, int]) -> Split:
    """The split furthest below its target share in the stratum, given the stratum's current counts."""
    total = sum(counts.values()) + 1

    def deficit(split: Split) -> tuple[float, float]:
        # Ties go to the larger share, then to the earlier split: deterministic.
        share = ratios.get(split)
        return (share * total - counts.get(split.value, 0), share)

    candidates = [s for s in SPLIT_ORDER if ratios.get(s) > 0]
    return max(candidates, key=deficit)


def assign_splits(slug: str, ratios: Ratios, stratify: bool, patients: Iterable[tuple[str, str | None]],
                  existing_counts: Mapping[str | None, Mapping[str, int]]) -> dict[str, tuple[Split, str | None]]:
    """Splits for new patients given as (pseudonym, stratum); `existing_counts[stratum][split]` counts the
    patients already assigned. New patients are processed in keyed-hash order, so the result does not depend
    on the order the catalog returned them."""
    ordered = sorted(patients, key=lambda p: keyed_hex(slug, "order", p[0]))
    counts: dict[str | None, dict[str, int]] = {k: dict(v) for k, v in existing_counts.items()}
    result: dict[str, tuple[Split, str | None]] = {}
    for pseudonym, stratum in ordered:
        if stratify:
            stratum_counts = counts.setdefault(stratum, {})
            split = stratified_split(ratios, stratum_counts)
            stratum_counts[split.value] = stratum_counts.get(split.value, 0) + 1
        else:
            split = hashed_split(slug, pseudonym, ratios)
        result[pseudonym] = (split, stratum if stratify else None)
    return result
