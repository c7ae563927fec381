"""Cohen's and Fleiss' kappa and Krippendorff's alpha reproduce published worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacslabel.review import cohen_kappa, fleiss_kappa, fleiss_kappa_from_counts, krippendorff_alpha_nominal

# Fleiss (1971), Psychological Bulletin 76(5): 6 psychiatrists, 30 patients, 5 diagnoses; published kappa 0.430.
# Raw form as distributed with R's irr package (`diagnoses`).
FLEISS_1971_DIAGNOSES = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]  # fmt: skip

# Wikipedia's "Fleiss' kappa" worked example: 14 raters, 10 subjects, 5 categories; P = 0.378, Pe = 0.213,
# kappa = 0.210.
WIKIPEDIA_COUNTS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]  # fmt: skip

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units, values
# 1..5, missing entries; published nominal alpha 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_fleiss_kappa_reproduces_fleiss_1971() -> None:
    assert fleiss_kappa(FLEISS_1971_DIAGNOSES) == pytest.approx(0.430, abs=5e-4)
    assert fleiss_kappa(FLEISS_1971_DIAGNOSES) == pytest.approx(0.4302445, abs=1e-7)  # R irr::kappam.fleiss


def test_fleiss_kappa_from_counts_reproduces_the_wikipedia_worked_example() -> None:
    assert fleiss_kappa_from_counts(WIKIPEDIA_COUNTS) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_of_raw_answers_equals_the_kappa_of_their_counts() -> None:
    counts = np.array([[row.count(c) for c in range(1, 6)] for row in FLEISS_1971_DIAGNOSES])
    assert fleiss_kappa_from_counts(counts) == pytest.approx(fleiss_kappa(FLEISS_1971_DIAGNOSES))


def test_fleiss_kappa_refuses_unequal_rater_counts_and_missing_answers() -> None:
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa_from_counts([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="krippendorff"):
        fleiss_kappa([["a", None], ["a", "b"]])


def test_krippendorff_alpha_nominal_reproduces_the_published_example_with_missing_values() -> None:
    assert krippendorff_alpha_nominal(KRIPPENDORFF_2011) == pytest.approx(0.743, abs=5e-4)
    with_nans = [[math.nan if v is None else float(v) for v in row] for row in KRIPPENDORFF_2011]
    assert krippendorff_alpha_nominal(with_nans) == pytest.approx(krippendorff_alpha_nominal(KRIPPENDORFF_2011))


def test_krippendorff_alpha_is_one_for_perfect_agreement_and_nan_without_variation() -> None:
    assert krippendorff_alpha_nominal([["a", "b", "c", None], ["a", "b", "c", "d"]]) == 1.0
    assert math.isnan(krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]))
    assert math.isnan(krippendorff_alpha_nominal([["a", None], [None, "b"]]))  # nothing pairable


def test_krippendorff_alpha_without_missing_values_is_close_to_fleiss_kappa() -> None:
    # For complete data the two differ only by the small-sample factor (n - 1) / n on the expected disagreement.
    by_rater = [list(column) for column in zip(*FLEISS_1971_DIAGNOSES, strict=True)]
    n = 6 * 30
    kappa = fleiss_kappa(FLEISS_1971_DIAGNOSES)
    assert krippendorff_alpha_nominal(by_rater) == pytest.approx(1 - (1 - kappa) * (n - 1) / n, abs=1e-12)


def test_cohen_kappa_reproduces_the_textbook_two_by_two_example() -> None:
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)


def test_cohen_kappa_is_one_for_a_consistent_repeat_read_and_nan_when_undefined() -> None:
    assert cohen_kappa([1, 2, 2, 3], [1, 2, 2, 3]) == 1.0
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))
    with pytest.raises(ValueError, match="different numbers"):
        cohen_kappa([1, 2], [1])
