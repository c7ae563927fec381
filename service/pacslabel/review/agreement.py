"""Agreement between readers: Dice and HD95 for segmentations, Cohen/Fleiss kappa and Krippendorff's alpha.

Label arrays are integer arrays of one grid, (slices, rows, cols), 0 = background, ``spacing`` is (slice, row,
col) in mm. The conventions (shared with MONAI's ``compute_hausdorff_distance`` and DeepMind's
``surface-distance``):

* the surface of a mask is ``mask XOR binary_erosion(mask)`` with the 6-neighbourhood (scipy's default
  structure) and ``border_value=0``, so a mask that touches the edge of the grid has a surface there;
* the distance of a surface voxel to the other mask is the Euclidean distance, in mm, to the nearest surface
  voxel of the other mask (the value ``distance_transform_edt(~other_surface, sampling=spacing)`` holds at that
  voxel); 0 where the two surfaces share a voxel;
* HD95 is symmetric: ``max(P95(d(A->B)), P95(d(B->A)))`` with numpy's linear percentile (MONAI's definition;
  MedPy pools both directions before the percentile instead, which gives slightly smaller values);
* both masks empty: Dice 1.0 and HD95 0.0 (the readers agree that the label is absent);
* exactly one mask empty: Dice 0.0 and HD95 ``inf`` (there is no surface to measure to; ``inf`` rather than
  NaN so that a threshold test ``hd95 <= limit`` fails, as it should).

Distances are not computed with a distance transform of the whole box (about 0.25 microseconds per voxel per
reader and label with scipy, far beyond the 2 s budget of 5 readers on a 512x512x300 CT): see
:mod:`pacslabel.review.surface_distance` for the exact method used instead. Tests check it against scipy's
``distance_transform_edt`` and a brute-force ``cdist``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pacslabel.review.surface_distance import LabelSurfaces, foreground_bounding_box

__all__ = [
    "LabelAgreement",
    "PairwiseAgreement",
    "cohen_kappa",
    "dice",
    "distinct_values",
    "fleiss_kappa",
    "fleiss_kappa_from_counts",
    "foreground_bounding_box",
    "hausdorff_distance_95",
    "intra_rater_agreement",
    "krippendorff_alpha_nominal",
    "label_agreement",
    "pairwise_agreement",
    "surface_distances",
]

Spacing = tuple[float, float, float]

# Label values up to this are looked for one by one (a comparison per value and read, whose masks are needed
# anyway); above it a histogram or np.unique finds them.
_SCAN_LABELS_UP_TO = 32


@dataclass(frozen=True, slots=True)
class LabelAgreement:
    """Agreement of two segmentations for one label: Dice (0..1) and symmetric HD95 in mm."""

    label: int
    dice: float
    hd95_mm: float


@dataclass(frozen=True, slots=True)
class PairwiseAgreement:
    """Agreement of two readers for one label: Dice (0..1) and symmetric HD95 in mm."""

    label: int
    reader_a: str
    reader_b: str
    dice: float
    hd95_mm: float


# --------------------------------------------------------------------------------------------------------------
# Volumes: validation and label values


def _check_spacing(spacing: Sequence[float], ndim: int) -> Spacing:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or ndim != 3:
        raise ValueError(f"expected 3-D arrays and a (slice, row, col) spacing, got ndim={ndim}, spacing={spacing}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return values  # type: ignore[return-value]


def _check_same_grid(arrays: Sequence[np.ndarray], names: Sequence[str]) -> tuple[int, ...]:
    if not arrays:
        raise ValueError("no label arrays given")
    shape = arrays[0].shape
    for name, array in zip(names, arrays, strict=True):
        if array.shape != shape:
            raise ValueError(f"label array of {name!r} has shape {array.shape}, expected {shape} (one grid)")
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise ValueError(f"label array of {name!r} has dtype {array.dtype}; integer labels expected")
    return shape


def distinct_values(array: np.ndarray) -> set[int]:
    """The distinct values of an integer array; a histogram for uint8/uint16 (np.unique sorts: ~10x slower)."""
    if array.size == 0:
        return set()
    if array.dtype == np.bool_ or array.dtype in (np.uint8, np.uint16):
        return {
            int(v)
            for v in np.flatnonzero(
                np.bincount(array.ravel().view(np.uint8) if array.dtype == np.bool_ else array.ravel())
            )
        }
    return {int(v) for v in np.unique(array)}


def _candidate_labels(crops: Sequence[np.ndarray]) -> tuple[list[int], bool]:
    """Label values that may occur in ``crops``, and whether each still has to be checked for presence.

    Raises ValueError for negative values. Small label ranges are returned whole (their masks, computed
    anyway, tell which are present); larger ones go through :func:`distinct_values`.
    """
    if not crops or crops[0].size == 0:
        return [], False
    for crop in crops:
        if np.issubdtype(crop.dtype, np.signedinteger) and int(crop.min()) < 0:
            raise ValueError("label arrays must not hold negative values")
    top = max(int(crop.max()) for crop in crops)
    if top <= _SCAN_LABELS_UP_TO:
        return list(range(1, top + 1)), True
    present: set[int] = set()
    for crop in crops:
        present |= distinct_values(crop)
    present.discard(0)
    return sorted(present), False


# --------------------------------------------------------------------------------------------------------------
# Pairs of masks


def _binary(mask: np.ndarray) -> np.ndarray:
    return mask if mask.dtype == np.bool_ else mask != 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)`` of two masks (non-zero = inside); 1.0 when both are empty."""
    a, b = _binary(np.asarray(a)), _binary(np.asarray(b))
    if a.shape != b.shape:
        raise ValueError(f"masks have different shapes {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (each surface voxel of A to surface B, each of B to surface A).

    Surface voxels are listed in C order of the grid. Either array is empty when its mask is empty; when the
    other mask is empty the distances are ``inf``.
    """
    a, b = _binary(np.asarray(a)), _binary(np.asarray(b))
    _check_same_grid([a, b], ["a", "b"])
    surfaces = LabelSurfaces([a, b], _check_spacing(spacing, a.ndim))
    if not surfaces.points:
        return np.empty(0), np.empty(0)
    out: list[np.ndarray] = []
    for source, target in ((0, 1), (1, 0)):
        if surfaces.counts[target] == 0:
            out.append(np.full(surfaces.points[source].size, np.inf))
        else:
            out.append(surfaces.directed(source, target))
    return out[0], out[1]


def hausdorff_distance_95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float], *, percentile: float = 95.0) -> float:
    """Symmetric ``percentile`` Hausdorff distance in mm between the surfaces of two masks.

    ``max(P(d(A->B)), P(d(B->A)))``; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    ``percentile=100`` gives the classic Hausdorff distance.
    """
    a, b = _binary(np.asarray(a)), _binary(np.asarray(b))
    _check_same_grid([a, b], ["a", "b"])
    return LabelSurfaces([a, b], _check_spacing(spacing, a.ndim)).hd(0, 1, percentile)


# --------------------------------------------------------------------------------------------------------------
# Segmentations: per label, per pair of readers


def _label_pairs(
    masks: list[np.ndarray], spacing: Spacing, pairs: list[tuple[int, int]], pool: ThreadPoolExecutor | None
) -> list[tuple[float, float]]:
    """(Dice, HD95) of every pair of readers for one label, from the readers' masks of that label."""
    surfaces = LabelSurfaces(masks, spacing, mapper=pool.map if pool is not None else map)
    if surfaces.box is None:  # nobody drew the label: the readers agree that it is absent
        return [(1.0, 0.0)] * len(pairs)
    dices = []
    for i, j in pairs:
        total = surfaces.counts[i] + surfaces.counts[j]
        dices.append(2.0 * int(np.count_nonzero(surfaces.masks[i] & surfaces.masks[j])) / total)

    # One job per target reader: its line field serves every pair with that reader, both directions of each
    # pair are queried with the reader as target once, and the field is dropped when the job ends.
    sources_of: dict[int, list[int]] = {}
    for i, j in pairs:
        if surfaces.counts[i] and surfaces.counts[j]:
            sources_of.setdefault(j, []).append(i)
            sources_of.setdefault(i, []).append(j)

    def to_target(target: int) -> list[float]:
        return surfaces.percentiles_to(target, sources_of[target], 95.0)

    targets = list(sources_of)
    values = list(pool.map(to_target, targets)) if pool is not None else [to_target(t) for t in targets]
    percentile = {
        (source, target): value
        for target, row in zip(targets, values, strict=True)
        for source, value in zip(sources_of[target], row, strict=True)
    }
    hds = []
    for i, j in pairs:
        empty_i, empty_j = surfaces.counts[i] == 0, surfaces.counts[j] == 0
        if empty_i or empty_j:
            hds.append(0.0 if empty_i and empty_j else math.inf)
        else:
            hds.append(max(percentile[(i, j)], percentile[(j, i)]))
    return list(zip(dices, hds, strict=True))


def pairwise_agreement(
    reads: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    *,
    workers: int | None = None,
) -> list[PairwiseAgreement]:
    """Dice and HD95 for every pair of readers and every label.

    Parameters
    ----------
    reads
        Reader id -> integer label array (slices, rows, cols), all on one grid.
    spacing
        (slice, row, col) voxel spacing in mm.
    labels
        The labels to report (e.g. every segment of the project's protocol, so that a label nobody drew is
        reported as agreement). Default: every non-zero value found in any read.
    workers
        Threads for the readers and pairs of one label (numpy's gathers release the GIL); default: the number
        of CPUs.

    Returns
    -------
    list of PairwiseAgreement
        Ordered by label, then by reader pair in the order of ``reads`` (``reader_a`` before ``reader_b``).
    """
    names = list(reads)
    arrays = [np.asarray(reads[name]) for name in names]
    _check_same_grid(arrays, names)
    grid_spacing = _check_spacing(spacing, arrays[0].ndim)
    box = foreground_bounding_box(arrays)
    crops = [array[box] for array in arrays] if box is not None else []
    if labels is not None:
        wanted, check_presence = list(labels), False
    else:
        wanted, check_presence = _candidate_labels(crops)
    pairs = list(itertools.combinations(range(len(names)), 2))
    workers = workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(names) > 1 else None
    out: list[PairwiseAgreement] = []
    try:
        for label in wanted:
            # Masks on the box of all labels; LabelSurfaces crops them to this label's own box.
            masks = (
                list(pool.map(np.equal, crops, [label] * len(crops)))
                if pool is not None
                else [c == label for c in crops]
            )
            if check_presence and not any(m.any() for m in masks):
                continue
            values = _label_pairs(masks, grid_spacing, pairs, pool) if masks else [(1.0, 0.0)] * len(pairs)
            out += [
                PairwiseAgreement(label, names[i], names[j], dice_value, hd95)
                for (i, j), (dice_value, hd95) in zip(pairs, values, strict=True)
            ]
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def label_agreement(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], labels: Sequence[int] | None = None
) -> list[LabelAgreement]:
    """Dice and HD95 per label between two label arrays (default labels: all non-zero values of either)."""
    pairs = pairwise_agreement({"a": a, "b": b}, spacing, labels, workers=1)
    return [LabelAgreement(p.label, p.dice, p.hd95_mm) for p in pairs]


def intra_rater_agreement(
    first: np.ndarray, repeat: np.ndarray, spacing: Sequence[float], labels: Sequence[int] | None = None
) -> list[LabelAgreement]:
    """Intra-rater reliability of one reader: their repeat read against their first read, per label.

    The same numbers as :func:`label_agreement`; a separate name so that reports say what was compared.
    For repeated classification answers use :func:`cohen_kappa` on (first answers, repeat answers).
    """
    return label_agreement(first, repeat, spacing, labels)


# --------------------------------------------------------------------------------------------------------------
# Categorical answers


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cohen_kappa(ratings_a: Sequence[Hashable], ratings_b: Sequence[Hashable]) -> float:
    """Cohen's kappa (unweighted) of two raters over the same items: ``(p_o - p_e) / (1 - p_e)``.

    Used for intra-rater reliability (first read vs repeat read) and for two readers. Returns NaN when the
    chance agreement is 1 (both raters used one and the same category throughout: kappa is undefined).
    Raises ValueError for different lengths, no items or missing answers.
    """
    if len(ratings_a) != len(ratings_b):
        raise ValueError(f"the raters rated different numbers of items ({len(ratings_a)} vs {len(ratings_b)})")
    if not ratings_a:
        raise ValueError("no items rated")
    if any(_is_missing(v) for v in itertools.chain(ratings_a, ratings_b)):
        raise ValueError("Cohen's kappa needs complete pairs; use krippendorff_alpha_nominal for missing answers")
    categories = {c: i for i, c in enumerate(dict.fromkeys(itertools.chain(ratings_a, ratings_b)))}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(ratings_a, ratings_b, strict=True):
        table[categories[x], categories[y]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float(table.sum(axis=1) @ table.sum(axis=0)) / n**2
    return math.nan if math.isclose(expected, 1.0) else float((observed - expected) / (1.0 - expected))


def fleiss_kappa_from_counts(counts: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a (subjects x categories) table of how many raters chose each category.

    Every subject must have the same number of raters (Fleiss 1971); NaN when the expected agreement is 1.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("counts must be a non-empty (subjects x categories) table")
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters for every subject")
    m = raters[0]
    p_category = table.sum(axis=0) / table.sum()
    p_subject = ((table * table).sum(axis=1) - m) / (m * (m - 1))
    p_bar = p_subject.mean()
    p_expected = float((p_category**2).sum())
    return math.nan if math.isclose(p_expected, 1.0) else float((p_bar - p_expected) / (1.0 - p_expected))


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float:
    """Fleiss' kappa from raw answers: one row per subject, one category per rater (same count per row).

    For missing answers or unequal numbers of raters use :func:`krippendorff_alpha_nominal`.
    """
    rows = [list(row) for row in ratings]
    if any(_is_missing(v) for row in rows for v in row):
        raise ValueError("Fleiss' kappa needs complete rows; use krippendorff_alpha_nominal for missing answers")
    categories = {c: i for i, c in enumerate(dict.fromkeys(v for row in rows for v in row))}
    counts = np.zeros((len(rows), len(categories)))
    for s, row in enumerate(rows):
        for value in row:
            counts[s, categories[value]] += 1
    return fleiss_kappa_from_counts(counts)


def krippendorff_alpha_nominal(reliability_data: Sequence[Sequence[Hashable | None]]) -> float:
    """Krippendorff's alpha for nominal data with missing values (Krippendorff 2011, "Computing ...").

    Parameters
    ----------
    reliability_data
        One row per rater (coder), one column per unit (item); ``None`` or NaN marks a missing answer.
        Units with fewer than two answers are not pairable and are ignored.

    Returns
    -------
    float
        ``1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k`` from the coincidence matrix ``o``; NaN when
        fewer than two pairable values exist or all pairable values are one category (alpha is undefined).
    """
    rows = [list(row) for row in reliability_data]
    if not rows:
        raise ValueError("no raters")
    units = len(rows[0])
    if any(len(row) != units for row in rows):
        raise ValueError("every rater row must have one entry per unit (None for missing)")
    values = {v: i for i, v in enumerate(dict.fromkeys(v for row in rows for v in row if not _is_missing(v)))}
    coincidence = np.zeros((len(values), len(values)))
    for u in range(units):
        present = [values[row[u]] for row in rows if not _is_missing(row[u])]
        m = len(present)
        if m < 2:
            continue
        unit_counts = np.bincount(present, minlength=len(values)).astype(np.float64)
        # Ordered pairs of different coders within the unit, each weighted 1/(m_u - 1).
        coincidence += (np.outer(unit_counts, unit_counts) - np.diag(unit_counts)) / (m - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    disagreement_expected = n * n - float((n_c**2).sum())  # sum over c != k of n_c n_k
    if n < 2 or disagreement_expected == 0:
        return math.nan
    disagreement_observed = n - float(np.trace(coincidence))  # sum over c != k of o_ck
    return float(1.0 - (n - 1) * disagreement_observed / disagreement_expected)
