"""Consensus segmentations from several readers: weighted majority vote and multi-label STAPLE.

Both methods work on *vote patterns*: the tuple of labels the readers gave to a voxel. The consensus of a
voxel, and its contribution to STAPLE's estimates, depend only on that tuple, so the volume is reduced once to
a histogram of the patterns that occur (a few hundred for 5 readers and 3 labels) and a per-voxel pattern
code. The EM iterations then run on the histogram, which makes them exact and independent of the volume
size; only the reduction and the final lookup touch the voxels (uint8/uint16 arrays on the bounding box of
all readers' foreground, never one-hot float volumes).

Label arrays are integer arrays of one grid, 0 = background; labels are the non-zero values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pacslabel.review.agreement import distinct_values, foreground_bounding_box

__all__ = ["ConsensusResult", "majority_vote", "staple"]

TieRule = Literal["background", "label"]
StapleRegion = Literal["bounding_box", "volume"]

# Relative tolerance when comparing weighted vote shares with one half (weights are floats).
_TIE_TOLERANCE = 1e-9
# Pattern codes up to this many are counted with a table (np.bincount); more are sorted with np.unique.
_RAW_CODES = 1 << 20
# STAPLE's conditional probabilities never reach exactly 0 or 1: a log(0) would make a single reader's vote
# veto a label for good.
_THETA_FLOOR = 1e-10


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    """A consensus segmentation and how it was reached.

    Attributes
    ----------
    labels
        Consensus label array, same shape and dtype as the reads.
    method
        ``"majority"`` or ``"staple"``.
    readers
        Reader ids in input order.
    reader_weights
        Weight of each reader as used, normalised to sum to 1.
    staple_sensitivity, staple_specificity
        STAPLE only: reader -> label -> estimated sensitivity P(reader says l | truth l) and specificity
        P(reader says not l | truth not l). None for majority vote.
    iterations
        EM iterations run (0 for majority vote).
    converged
        False when STAPLE stopped at ``max_iterations`` before reaching the tolerance.
    prior
        STAPLE only: label (0 = background) -> prior probability used.
    """

    labels: np.ndarray
    method: Literal["majority", "staple"]
    readers: tuple[str, ...]
    reader_weights: dict[str, float]
    staple_sensitivity: dict[str, dict[int, float]] | None = None
    staple_specificity: dict[str, dict[int, float]] | None = None
    iterations: int = 0
    converged: bool = True
    prior: dict[int, float] | None = None


@dataclass(slots=True)
class _VotePatterns:
    """The reads reduced to vote patterns on the bounding box of their foreground."""

    classes: np.ndarray  # (K,) label value of each class index; classes[0] == 0
    patterns: np.ndarray  # (P, R) class index each reader gave, one row per pattern that occurs
    counts: np.ndarray  # (P,) voxels with that pattern (within the region)
    code: np.ndarray | None  # per-voxel pattern code on the box (None when every read is empty)
    row_of_code: np.ndarray | None  # pattern row of each code (None: `code` already holds the rows)
    box: tuple[slice, ...] | None
    shape: tuple[int, ...]
    dtype: np.dtype

    def paint(self, class_of_pattern: np.ndarray) -> np.ndarray:
        """A full label array from one class index per pattern (background outside the box)."""
        out = np.zeros(self.shape, dtype=self.dtype)
        if self.box is not None and self.code is not None:
            values = self.classes[class_of_pattern].astype(self.dtype)
            # One gather per voxel: label value per code (a small table), or per pattern row.
            lookup = values if self.row_of_code is None else values[self.row_of_code]
            out[self.box] = lookup[self.code]
        return out


def _check_reads(reads: Mapping[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    names = list(reads)
    if not names:
        raise ValueError("no reads given")
    arrays = [np.asarray(reads[name]) for name in names]
    shape = arrays[0].shape
    for name, array in zip(names, arrays, strict=True):
        if array.shape != shape:
            raise ValueError(f"read of {name!r} has shape {array.shape}, expected {shape} (one grid)")
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise ValueError(f"read of {name!r} has dtype {array.dtype}; integer labels expected")
    return names, arrays


def _check_labels(present: Sequence[int], labels: Sequence[int] | None) -> list[int]:
    wanted = sorted(set(labels)) if labels is not None else sorted(present)
    if 0 in wanted or any(v < 0 for v in wanted):
        raise ValueError("labels are the positive values; 0 is the background")
    unknown = set(present) - set(wanted)
    if unknown:
        raise ValueError(f"reads hold label values {sorted(unknown)} that are not in labels={list(wanted)}")
    return wanted


def _horner(digits: Sequence[np.ndarray], base: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """Per-voxel code ``sum_j digit_j * base^(R-1-j)``: reader 0 is the most significant digit."""
    code = digits[0].astype(dtype)
    for digit in digits[1:]:
        code *= dtype(base)
        np.add(code, digit, out=code, casting="unsafe")
    return code


def _histogram(code: np.ndarray, size: int) -> np.ndarray:
    """``np.bincount(code, minlength=size)``, counting only the non-zero codes.

    Code 0 (every reader said background) is most of the box, and bincount converts its input to 64-bit
    integers first: leaving code 0 out halves the time.
    """
    flat = code.ravel()
    labelled = flat[flat != 0]
    histogram = np.bincount(labelled, minlength=size)
    histogram[0] += flat.size - labelled.size
    return histogram


def _vote_patterns(
    arrays: list[np.ndarray], labels: Sequence[int] | None, margin: int, region: StapleRegion
) -> _VotePatterns:
    shape = arrays[0].shape
    dtype = np.result_type(*arrays) if arrays[0].dtype != np.bool_ else np.dtype(np.uint8)
    box = foreground_bounding_box(arrays, margin=margin)
    crops = [a[box] for a in arrays] if box is not None else []
    r = len(arrays)
    box_voxels = math.prod(b.stop - b.start for b in box) if box is not None else 0
    outside = math.prod(shape) - box_voxels if region == "volume" else 0
    if box is None:
        classes = np.array([0, *_check_labels([], labels)], dtype=np.int64)
        patterns = np.zeros((1 if outside else 0, r), dtype=np.int64)
        counts = np.array([outside] if outside else [], dtype=np.int64)
        return _VotePatterns(classes, patterns, counts, None, None, None, shape, dtype)

    for crop in crops:
        if np.issubdtype(crop.dtype, np.signedinteger) and int(crop.min()) < 0:
            raise ValueError("label arrays must not hold negative values")
    top = max(int(crop.max()) for crop in crops)
    if (top + 1) ** r <= _RAW_CODES:
        # The label values themselves are the digits: no pass to find the values first, and the values
        # present come out of the histogram of the (few) codes.
        base = top + 1
        code = _horner(crops, base, np.uint16 if base**r <= 1 << 16 else np.uint32)
        histogram = _histogram(code, base**r)
        present_codes = np.flatnonzero(histogram)
        counts = histogram[present_codes]
        powers = base ** np.arange(r - 1, -1, -1, dtype=np.int64)
        raw = (present_codes[:, None] // powers[None, :]) % base
        present = [int(v) for v in np.unique(raw) if v != 0]
        classes = np.array([0, *_check_labels(present, labels)], dtype=np.int64)
        k = classes.size
        class_of_value = np.zeros(base, dtype=np.int64)
        class_of_value[classes[classes < base]] = np.arange(k)[classes < base]
        patterns = class_of_value[raw]
        row_of_code: np.ndarray | None = np.zeros(base**r, dtype=np.int64)
        row_of_code[present_codes] = np.arange(present_codes.size)
        all_background = present_codes[0] == 0
    else:
        present = sorted(set().union(*(distinct_values(c) for c in crops)) - {0})
        classes = np.array([0, *_check_labels(present, labels)], dtype=np.int64)
        k = classes.size
        # Class index per voxel through a lookup table (label values can be large: few occur).
        lookup = np.zeros(int(classes.max()) + 1, dtype=np.uint8 if k <= 256 else np.uint16)
        lookup[classes] = np.arange(k)
        digits = [lookup[crop] for crop in crops]
        radix = k**r
        if radix <= _RAW_CODES:
            code = _horner(digits, k, np.uint16 if radix <= 1 << 16 else np.uint32)
            histogram = _histogram(code, radix)
            present_codes = np.flatnonzero(histogram)
            counts = histogram[present_codes]
            row_of_code = np.zeros(radix, dtype=np.int64)
            row_of_code[present_codes] = np.arange(present_codes.size)
        else:  # too many combinations for a table: sort instead
            wide = np.zeros(digits[0].shape, dtype=np.int64)
            for digit in digits:
                wide *= k
                wide += digit
            present_codes, inverse, counts = np.unique(wide.ravel(), return_inverse=True, return_counts=True)
            code, row_of_code = inverse.reshape(wide.shape), None
        powers = k ** np.arange(r - 1, -1, -1, dtype=np.int64)
        patterns = (present_codes.astype(np.int64)[:, None] // powers[None, :]) % k
        all_background = present_codes[0] == 0
    counts = counts.astype(np.int64)
    if outside:  # the voxels outside the box: every reader said background (pattern code 0)
        if all_background:
            counts[0] += outside
        else:
            patterns = np.vstack([np.zeros((1, r), dtype=np.int64), patterns])
            counts = np.concatenate([[outside], counts])
            # shift rows to make room for the new first pattern
            if row_of_code is None:
                code = code + 1
            else:
                row_of_code = row_of_code + 1
    return _VotePatterns(classes, patterns, counts, code, row_of_code, box, shape, dtype)


def _normalised_weights(names: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"no weight for readers {missing}")
    w = np.array([float(weights[n]) for n in names])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("reader weights must be finite, non-negative and not all zero")
    return w / w.sum()


def majority_vote(
    reads: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    *,
    ties: TieRule = "background",
    labels: Sequence[int] | None = None,
) -> ConsensusResult:
    """Per-label (weighted) majority vote.

    A voxel gets label ``l`` when the readers who gave it ``l`` hold more than half of the total weight.
    Each reader gives a voxel one label, so at most one label can hold a strict majority.

    Tie rule, for a label holding exactly half of the weight (an even split, e.g. 2 of 4 equal readers):
    ``ties="background"`` (default) leaves the voxel background, the conservative choice that keeps the
    consensus inside what a majority drew; ``ties="label"`` gives it the label (the "50 % consensus" of
    LIDC-style studies). If two labels hold half each (two readers, two different labels) the voxel stays
    background under both rules, since neither label is preferred.

    Parameters
    ----------
    reads
        Reader id -> integer label array, all on one grid.
    weights
        Reader id -> non-negative weight (e.g. from seniority); default equal weights.
    ties
        See above.
    labels
        Allowed label values (default: those present); a read holding another value raises ValueError.
    """
    if ties not in ("background", "label"):
        raise ValueError(f"ties must be 'background' or 'label', got {ties!r}")
    names, arrays = _check_reads(reads)
    w = _normalised_weights(names, weights)
    votes = _vote_patterns(arrays, labels, margin=0, region="bounding_box")
    k = votes.classes.size
    # share[p, c]: weight of the readers that gave class c in pattern p.
    share = np.zeros((votes.patterns.shape[0], k))
    for j in range(len(names)):
        np.add.at(share, (np.arange(votes.patterns.shape[0]), votes.patterns[:, j]), w[j])
    share[:, 0] = 0.0  # background is what is left when no label wins
    winner = np.zeros(votes.patterns.shape[0], dtype=np.int64)
    strict = share > 0.5 + _TIE_TOLERANCE
    tied = np.abs(share - 0.5) <= _TIE_TOLERANCE
    has_strict = strict.any(axis=1)
    winner[has_strict] = strict[has_strict].argmax(axis=1)
    if ties == "label":
        single_tie = ~has_strict & (tied.sum(axis=1) == 1)
        winner[single_tie] = tied[single_tie].argmax(axis=1)
    return ConsensusResult(
        labels=votes.paint(winner),
        method="majority",
        readers=tuple(names),
        reader_weights={n: float(x) for n, x in zip(names, w, strict=True)},
    )


def staple(
    reads: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    *,
    prior: Mapping[int, float] | None = None,
    labels: Sequence[int] | None = None,
    region: StapleRegion = "bounding_box",
    margin: int = 2,
    initial_performance: float = 0.99,
    tolerance: float = 1e-7,
    max_iterations: int = 200,
) -> ConsensusResult:
    """Multi-label STAPLE (Warfield, Zou, Wells 2004): EM estimate of the true labels and of each reader.

    Each reader ``j`` is modelled by a confusion matrix ``theta_j[d, s] = P(reader says d | truth s)``. The
    E-step computes, per voxel, ``W[s] ∝ prior[s] * prod_j theta_j[D_j, s] ** w_j``; the M-step re-estimates
    ``theta_j[d, s] = sum_{voxels with D_j = d} W[s] / sum_voxels W[s]``. The consensus is ``argmax_s W[s]``
    (ties go to the lower label, background first).

    Parameters
    ----------
    reads
        Reader id -> integer label array, all on one grid.
    weights
        Optional reader weights (e.g. from seniority). STAPLE itself has none: they are applied as exponents of
        each reader's likelihood, normalised to a mean of 1, so equal weights give plain STAPLE and a reader
        with twice the weight counts as two independent readers with the same performance.
    prior
        Label (0 = background) -> prior probability of the truth; default (Warfield) the mean fraction of each
        label over the readers within the region. Normalised to sum 1.
    labels
        Allowed label values (default: those present).
    region
        ``"bounding_box"`` (default): the bounding box of all readers' foreground grown by ``margin`` voxels; the
        voxels outside are background in the consensus. ``"volume"``: the whole grid, as ITK's filter does;
        the huge background makes every specificity close to 1 and lowers the label priors. Both are
        computed exactly (the voxels outside the box all have the all-background pattern).
    initial_performance
        Initial sensitivity and specificity of every reader (diagonal of ``theta``), as in Warfield 2004.
    tolerance, max_iterations
        Stop when no entry of any ``theta`` changes by more than ``tolerance``, or after ``max_iterations``.

    Returns
    -------
    ConsensusResult
        With ``staple_sensitivity[reader][label] = theta[l, l]`` and
        ``staple_specificity[reader][label] = P(says not l | truth not l)`` from the final posterior.
    """
    if region not in ("bounding_box", "volume"):
        raise ValueError(f"region must be 'bounding_box' or 'volume', got {region!r}")
    if not 0.0 < initial_performance < 1.0:
        raise ValueError("initial_performance must be in (0, 1)")
    names, arrays = _check_reads(reads)
    w = _normalised_weights(names, weights)
    exponents = w * len(names)  # mean 1
    votes = _vote_patterns(arrays, labels, margin=margin, region=region)
    classes, patterns, counts = votes.classes, votes.patterns, votes.counts.astype(np.float64)
    k, r = classes.size, len(names)
    label_values = [int(c) for c in classes]

    if counts.size == 0:  # nothing drawn and region="bounding_box": nothing to estimate
        perfect = {n: dict.fromkeys(label_values[1:], 1.0) for n in names}
        return ConsensusResult(
            labels=votes.paint(np.zeros(0, dtype=np.int64)),
            method="staple",
            readers=tuple(names),
            reader_weights={n: float(x) for n, x in zip(names, w, strict=True)},
            staple_sensitivity=perfect,
            staple_specificity={n: dict(v) for n, v in perfect.items()},
            iterations=0,
            converged=True,
            prior={0: 1.0, **dict.fromkeys(label_values[1:], 0.0)},
        )

    if prior is None:
        f = np.zeros(k)
        for j in range(r):
            f += np.bincount(patterns[:, j], weights=counts, minlength=k)
        f /= f.sum()
    else:
        unknown = set(prior) - set(label_values)
        if unknown:
            raise ValueError(f"prior names labels {sorted(unknown)} that are not among {label_values}")
        f = np.array([float(prior.get(v, 0.0)) for v in label_values])
        if np.any(f < 0) or f.sum() <= 0:
            raise ValueError("prior probabilities must be non-negative and not all zero")
        f /= f.sum()
    log_prior = np.log(np.maximum(f, _THETA_FLOOR))

    off = (1.0 - initial_performance) / (k - 1) if k > 1 else 0.0
    theta = np.full((r, k, k), off)
    theta[:, np.arange(k), np.arange(k)] = initial_performance if k > 1 else 1.0

    one_hot = [np.eye(k)[patterns[:, j]] for j in range(r)]  # (P, K) per reader: which d the reader gave
    iterations, converged = 0, False
    posterior = np.zeros((patterns.shape[0], k))
    while iterations < max_iterations:
        iterations += 1
        # E-step, in logs: a product of many small probabilities underflows.
        log_w = np.tile(log_prior, (patterns.shape[0], 1))
        for j in range(r):
            log_w += exponents[j] * np.log(np.maximum(theta[j][patterns[:, j]], _THETA_FLOOR))
        log_w -= log_w.max(axis=1, keepdims=True)
        posterior = np.exp(log_w)
        posterior /= posterior.sum(axis=1, keepdims=True)
        # M-step on the pattern histogram.
        mass = posterior * counts[:, None]  # (P, K): expected voxels of each true class
        truth_total = mass.sum(axis=0)
        new_theta = theta.copy()
        for j in range(r):
            confusion = one_hot[j].T @ mass  # (d, s)
            usable = truth_total > 0  # a class that is never true keeps its previous column
            new_theta[j][:, usable] = confusion[:, usable] / truth_total[usable]
        change = float(np.abs(new_theta - theta).max())
        theta = new_theta
        if change <= tolerance:
            converged = True
            break

    # Final posterior with the final theta, for the consensus and the specificity.
    log_w = np.tile(log_prior, (patterns.shape[0], 1))
    for j in range(r):
        log_w += exponents[j] * np.log(np.maximum(theta[j][patterns[:, j]], _THETA_FLOOR))
    log_w -= log_w.max(axis=1, keepdims=True)
    posterior = np.exp(log_w)
    posterior /= posterior.sum(axis=1, keepdims=True)
    mass = posterior * counts[:, None]
    consensus = posterior.argmax(axis=1)

    sensitivity: dict[str, dict[int, float]] = {}
    specificity: dict[str, dict[int, float]] = {}
    for j, name in enumerate(names):
        confusion = one_hot[j].T @ mass  # (d, s), expected voxel counts
        sensitivity[name] = {}
        specificity[name] = {}
        for c in range(1, k):
            truly_c = confusion[:, c].sum()
            sensitivity[name][label_values[c]] = float(confusion[c, c] / truly_c) if truly_c > 0 else math.nan
            not_c = [s for s in range(k) if s != c]
            truly_not = confusion[:, not_c].sum()
            said_not = truly_not - confusion[c, not_c].sum()
            specificity[name][label_values[c]] = float(said_not / truly_not) if truly_not > 0 else math.nan
    return ConsensusResult(
        labels=votes.paint(consensus),
        method="staple",
        readers=tuple(names),
        reader_weights={n: float(x) for n, x in zip(names, w, strict=True)},
        staple_sensitivity=sensitivity,
        staple_specificity=specificity,
        iterations=iterations,
        converged=converged,
        prior={v: float(p) for v, p in zip(label_values, f, strict=True)},
    )
