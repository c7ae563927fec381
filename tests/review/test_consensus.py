"""Majority vote (ties, weights) and multi-label STAPLE on synthetic reads with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from pacslabel.review import consensus as consensus_module
from pacslabel.review import majority_vote, staple

SHAPE = (16, 40, 40)


def _truth() -> np.ndarray:
    truth = np.zeros(SHAPE, dtype=np.uint8)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth[((z - 8) / 6) ** 2 + ((y - 15) / 10) ** 2 + ((x - 15) / 10) ** 2 <= 1] = 1
    truth[((z - 8) / 3) ** 2 + ((y - 15) / 4) ** 2 + ((x - 18) / 4) ** 2 <= 1] = 2  # inside label 1
    truth[((z - 7) / 4) ** 2 + ((y - 31) / 5) ** 2 + ((x - 30) / 6) ** 2 <= 1] = 3
    return truth


def _noisy(truth: np.ndarray, rng: np.random.Generator, flip: float) -> np.ndarray:
    noisy = truth.copy()
    flips = rng.random(SHAPE) < flip
    noisy[flips] = rng.integers(0, 4, int(flips.sum()))
    return noisy


def _voxel(value_per_reader: list[int]) -> dict[str, np.ndarray]:
    return {f"r{i}": np.full((1, 1, 1), v, dtype=np.uint8) for i, v in enumerate(value_per_reader)}


def test_majority_vote_keeps_what_more_than_half_drew() -> None:
    assert majority_vote(_voxel([1, 1, 1, 0, 2])).labels.item() == 1
    assert majority_vote(_voxel([1, 1, 0, 2, 2])).labels.item() == 0  # plurality is not majority


def test_majority_vote_ties_go_to_background_by_default_and_to_the_label_on_request() -> None:
    reads = _voxel([1, 1, 0, 0])
    assert majority_vote(reads).labels.item() == 0
    assert majority_vote(reads, ties="label").labels.item() == 1
    # Two labels with half each: neither is preferred, under both rules.
    assert majority_vote(_voxel([1, 2]), ties="label").labels.item() == 0
    assert majority_vote(_voxel([1, 2])).labels.item() == 0


def test_reader_weights_change_the_majority_as_expected() -> None:
    reads = _voxel([1, 0, 0])
    assert majority_vote(reads).labels.item() == 0
    senior_first = majority_vote(reads, weights={"r0": 3.0, "r1": 1.0, "r2": 1.0})
    assert senior_first.labels.item() == 1
    assert senior_first.reader_weights == pytest.approx({"r0": 0.6, "r1": 0.2, "r2": 0.2})
    # 2 : 1 : 1 puts the senior reader at exactly half: a tie.
    tied = {"r0": 2.0, "r1": 1.0, "r2": 1.0}
    assert majority_vote(reads, weights=tied).labels.item() == 0
    assert majority_vote(reads, weights=tied, ties="label").labels.item() == 1


def test_majority_vote_of_three_labels_on_a_volume_matches_a_voxelwise_count() -> None:
    rng = np.random.default_rng(1)
    truth = _truth()
    reads = {f"r{i}": _noisy(truth, rng, 0.2) for i in range(5)}
    stack = np.stack(list(reads.values()))
    expected = np.zeros(SHAPE, dtype=np.uint8)
    for label in (1, 2, 3):
        expected[(stack == label).sum(axis=0) >= 3] = label
    result = majority_vote(reads)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.labels.dtype == np.uint8 and result.method == "majority"


def test_staple_recovers_the_truth_that_four_readers_share_and_ranks_the_noisy_reader_last() -> None:
    rng = np.random.default_rng(2)
    truth = _truth()
    reads = {f"r{i}": truth.copy() for i in range(4)}
    reads["noisy"] = _noisy(truth, rng, 0.3)

    result = staple(reads)
    np.testing.assert_array_equal(result.labels, truth)
    assert result.converged and result.iterations > 0
    assert result.staple_sensitivity is not None and result.staple_specificity is not None
    for label in (1, 2, 3):
        sensitivities = {r: v[label] for r, v in result.staple_sensitivity.items()}
        specificities = {r: v[label] for r, v in result.staple_specificity.items()}
        assert min(sensitivities, key=sensitivities.__getitem__) == "noisy"
        assert min(specificities, key=specificities.__getitem__) == "noisy"
        assert sensitivities["r0"] == pytest.approx(1.0, abs=1e-6)
        assert sensitivities["noisy"] < 0.9


def test_staple_of_identical_readers_is_their_segmentation() -> None:
    truth = _truth()
    result = staple({name: truth.copy() for name in ("a", "b", "c")})
    np.testing.assert_array_equal(result.labels, truth)
    for performance in (result.staple_sensitivity, result.staple_specificity):
        assert performance is not None
        assert all(v == pytest.approx(1.0) for per_label in performance.values() for v in per_label.values())


def test_staple_separates_readers_with_different_error_rates_on_three_labels() -> None:
    rng = np.random.default_rng(4)
    truth = _truth()
    reads = {"good": _noisy(truth, rng, 0.02), "fair": _noisy(truth, rng, 0.08), "poor": _noisy(truth, rng, 0.25)}
    reads["good2"] = _noisy(truth, rng, 0.02)
    result = staple(reads)
    assert result.staple_sensitivity is not None
    mean_sensitivity = {r: np.mean(list(v.values())) for r, v in result.staple_sensitivity.items()}
    assert mean_sensitivity["good"] > mean_sensitivity["fair"] > mean_sensitivity["poor"]
    # The consensus is closer to the truth than any single reader.
    consensus_errors = np.count_nonzero(result.labels != truth)
    assert consensus_errors < min(np.count_nonzero(r != truth) for r in reads.values())


def test_staple_weights_favour_the_senior_reader_when_readers_split() -> None:
    truth = _truth()
    other = truth.copy()
    other[other == 3] = 0
    reads = {"senior": truth, "junior": other}
    assert np.count_nonzero(staple(reads, weights={"senior": 3.0, "junior": 1.0}).labels == 3) == np.count_nonzero(
        truth == 3
    )
    assert np.count_nonzero(staple(reads, weights={"senior": 1.0, "junior": 3.0}).labels == 3) == 0


def test_staple_prior_and_region_are_honoured() -> None:
    truth = _truth()
    reads = {"a": truth, "b": truth.copy()}
    result = staple(reads, prior={0: 0.5, 1: 0.2, 2: 0.2, 3: 0.1})
    assert result.prior == pytest.approx({0: 0.5, 1: 0.2, 2: 0.2, 3: 0.1})
    whole = staple(reads, region="volume")
    np.testing.assert_array_equal(whole.labels, truth)
    assert whole.prior is not None and whole.prior[1] == pytest.approx(np.mean(truth == 1))


def test_labels_that_are_not_numbered_one_to_k_are_kept() -> None:
    truth = _truth()
    renumbered = np.select([truth == 1, truth == 2, truth == 3], [7, 2, 40], 0).astype(np.uint16)
    for result in (staple({"a": renumbered, "b": renumbered}), majority_vote({"a": renumbered, "b": renumbered})):
        np.testing.assert_array_equal(result.labels, renumbered)
        assert result.labels.dtype == np.uint16


def test_empty_reads_give_an_empty_consensus() -> None:
    empty = {"a": np.zeros(SHAPE, np.uint8), "b": np.zeros(SHAPE, np.uint8)}
    for result in (majority_vote(empty), staple(empty), staple(empty, region="volume")):
        assert result.labels.shape == SHAPE and not result.labels.any()


def test_bad_input_is_refused() -> None:
    truth = _truth()
    with pytest.raises(ValueError, match="no reads"):
        majority_vote({})
    with pytest.raises(ValueError, match="not in labels"):
        staple({"a": truth}, labels=[1, 2])
    with pytest.raises(ValueError, match="no weight"):
        majority_vote({"a": truth, "b": truth}, weights={"a": 1.0})
    with pytest.raises(ValueError, match="shape"):
        staple({"a": truth, "b": truth[:-1]})


def _voxelwise_majority(reads: dict[str, np.ndarray], labels: list[int]) -> np.ndarray:
    stack = np.stack(list(reads.values()))
    expected = np.zeros(stack.shape[1:], dtype=stack.dtype)
    for label in labels:
        expected[(stack == label).sum(axis=0) * 2 > len(reads)] = label
    return expected


@pytest.mark.parametrize(
    ("readers", "values"),
    [
        (5, [1, 2, 3]),  # label values are the pattern digits (one table of 4^5 codes)
        (3, [5, 200]),  # too many raw codes (201^3): class indices through a lookup table
        (12, [1, 2, 3]),  # too many codes even for class indices (4^12): sorted with np.unique
    ],
)
def test_every_way_of_coding_vote_patterns_gives_the_same_consensus(
    readers: int, values: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(readers)
    truth = np.select([_truth() == 1, _truth() == 2, _truth() == 3], [values[0], values[-1], values[0]], 0)
    reads = {}
    for r in range(readers):
        noisy = truth.astype(np.uint8)
        flips = rng.random(SHAPE) < 0.6 / readers  # few distinct patterns keep the EM of 12 readers short
        noisy[flips] = rng.choice([0, *values], int(flips.sum()))
        reads[f"r{r}"] = noisy
    majority, consensus = majority_vote(reads), staple(reads, region="volume")
    np.testing.assert_array_equal(majority.labels, _voxelwise_majority(reads, values))
    assert consensus.staple_sensitivity is not None and set(consensus.staple_sensitivity["r0"]) == set(values)

    # The plain path: every pattern code sorted with np.unique, no tables.
    monkeypatch.setattr(consensus_module, "_RAW_CODES", 1)
    plain = staple(reads, region="volume")
    np.testing.assert_array_equal(majority_vote(reads).labels, majority.labels)
    np.testing.assert_array_equal(plain.labels, consensus.labels)
    assert (plain.iterations, plain.prior) == (consensus.iterations, consensus.prior)
    assert plain.staple_sensitivity == consensus.staple_sensitivity
    assert plain.staple_specificity == consensus.staple_specificity


def test_staple_over_the_whole_volume_counts_every_background_voxel_outside_the_box() -> None:
    truth = _truth()
    padded = np.zeros((40, 60, 60), dtype=np.uint8)
    padded[10:26, 10:50, 10:50] = truth
    other = padded.copy()
    other[padded == 3] = 0
    reads = {"a": padded, "b": other, "c": padded.copy()}
    whole = staple(reads, region="volume")
    assert whole.prior is not None
    # Warfield's prior: the mean fraction of each label over the readers, here over the whole grid.
    for label in (1, 2, 3):
        mean_fraction = np.mean([np.mean(r == label) for r in reads.values()])
        assert whole.prior[label] == pytest.approx(mean_fraction, rel=1e-12)
    np.testing.assert_array_equal(whole.labels, majority_vote(reads).labels)


def test_negative_label_values_are_refused() -> None:
    reads = {"a": np.zeros((3, 4, 5), np.int16), "b": np.zeros((3, 4, 5), np.int16)}
    reads["b"][1, 1, 1] = -1
    reads["a"][1, 1, 2] = 1
    for method in (majority_vote, staple):
        with pytest.raises(ValueError, match="negative"):
            method(reads)
