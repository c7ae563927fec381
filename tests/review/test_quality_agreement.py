"""Inter-rater agreement in the project quality view: Fleiss' kappa, Krippendorff's alpha and the answer
distribution per classification question, and the pairwise Dice/HD95 summary per segment label, equal small
reference implementations written here from the definitions (loops over raters and pairs, brute-force surface
distances), on hand-made tables and on the quality world (real database, real Orthanc SRs and SEGs)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from pacslabel.db import session_scope
from pacslabel.projects.models import Project
from pacslabel.review import quality
from pacslabel.review.quality_agreement import answer_agreement, distribution_summary, segment_agreement
from pacslabel.review.quality_plots import bar_chart
from tests.annotations.sources import PIXEL_SPACING, SLICE_SPACING
from tests.review.test_intra_rater import numpy_dice_per_label
from tests.review.test_quality_world import (  # noqa: F401
    ITEMS,
    LABEL_NAMES,
    MASKS,
    QUESTION,
    READS,
    QualityWorld,
    quality_world,
)

# --- reference implementations (from the published definitions; nothing from pacslabel.review.agreement) ---------


def reference_fleiss(rows: list[list[str]]) -> float | None:
    """Fleiss (1971): P_i = (sum_j n_ij^2 - m) / (m (m - 1)), P_e = sum_j p_j^2, kappa = (mean P_i - P_e)/(1 - P_e)."""
    m = len(rows[0])
    categories = sorted({v for row in rows for v in row})
    p_i = [(sum(row.count(c) ** 2 for c in categories) - m) / (m * (m - 1)) for row in rows]
    p_j = [sum(row.count(c) for row in rows) / (len(rows) * m) for c in categories]
    p_e = sum(p * p for p in p_j)
    if p_e == 1:
        return None
    return (sum(p_i) / len(p_i) - p_e) / (1 - p_e)


def reference_alpha(units: list[list[str]]) -> float | None:
    """Krippendorff's alpha (nominal) from pairable values: D_o over ordered pairs within a unit weighted by
    1/(m_u - 1), D_e over ordered pairs of all pairable values; alpha = 1 - D_o / D_e."""
    pairable = [u for u in units if len(u) >= 2]
    n = sum(len(u) for u in pairable)
    observed = sum(
        sum(1 for a, b in itertools.permutations(u, 2) if a != b) / (len(u) - 1) for u in pairable
    ) / n
    values = [v for u in pairable for v in u]
    expected = sum(1 for a, b in itertools.permutations(values, 2) if a != b) / (n * (n - 1))
    return None if expected == 0 else 1 - observed / expected


def reference_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Symmetric HD95 by brute force: every surface voxel to every surface voxel of the other mask (cdist)."""
    if not a.any() or not b.any():
        return math.inf
    surfaces = [np.argwhere(m ^ binary_erosion(m, border_value=0)) * np.asarray(spacing) for m in (a, b)]
    distances = cdist(surfaces[0], surfaces[1])
    return max(float(np.percentile(distances.min(axis=1), 95)), float(np.percentile(distances.min(axis=0), 95)))


def reference_summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None}
    ordered = sorted(values)

    def quantile(q: float) -> float:  # numpy's default: linear between closest ranks
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"n": len(values), "median": quantile(0.5), "q1": quantile(0.25), "q3": quantile(0.75),
            "iqr": quantile(0.75) - quantile(0.25)}


def reference_question(answers: Mapping[Any, Mapping[Any, str]]) -> dict[str, Any]:
    rated = {i: dict(by) for i, by in answers.items() if len(by) >= 2}
    sizes = Counter(len(by) for by in rated.values())
    raters = max(sizes, key=lambda s: (sizes[s], s)) if sizes else None
    rows = [list(by.values()) for by in rated.values() if len(by) == raters]
    return {
        "items_rated": len(rated),
        "answers": dict(sorted(Counter(a for by in answers.values() for a in by.values()).items())),
        "fleiss_raters": raters,
        "fleiss_items": len(rows),
        "fleiss_excluded": len(rated) - len(rows),
        "fleiss_kappa": reference_fleiss(rows) if len(rows) >= 2 else None,
        "krippendorff_alpha": reference_alpha([list(by.values()) for by in rated.values()]) if rated else None,
    }


def assert_close(actual: Any, wanted: Any, where: str) -> None:
    if isinstance(wanted, dict):
        assert set(actual) == set(wanted), where
        for key in wanted:
            assert_close(actual[key], wanted[key], f"{where}.{key}")
    elif isinstance(wanted, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(wanted, abs=1e-12), where
    else:
        assert actual == wanted, where


# --- hand-made tables ---------------------------------------------------------------------------------------


def test_fleiss_uses_the_most_common_rater_count_and_alpha_every_rated_item() -> None:
    answers = {
        1: {10: "yes", 11: "yes", 12: "no"},
        2: {10: "no", 11: "no", 12: "no"},
        3: {10: "yes", 11: "maybe", 12: "yes"},
        4: {10: "yes", 12: "no"},  # two raters: not in Fleiss' kappa, in alpha
        5: {11: "maybe"},  # one answer: only in the distribution
    }
    got = answer_agreement(answers)
    assert got["fleiss_raters"] == 3 and got["fleiss_items"] == 3 and got["fleiss_excluded"] == 1
    assert got["items_rated"] == 4
    assert got["answers"] == {"maybe": 2, "no": 5, "yes": 5}
    assert_close(got, reference_question(answers), "hand-made")
    # Spelled out once: Fleiss over items 1-3 by hand. P_i = 1/3, 1, 1/3; p = (yes 4, no 4, maybe 1)/9.
    p_bar, p_e = (1 / 3 + 1 + 1 / 3) / 3, (16 + 16 + 1) / 81
    assert got["fleiss_kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    assert got["krippendorff_alpha"] is not None and -1 <= got["krippendorff_alpha"] <= 1


def test_rater_count_ties_go_to_the_larger_count_and_undefined_coefficients_are_none() -> None:
    answers = {1: {1: "a", 2: "b"}, 2: {1: "a", 2: "a"}, 3: {1: "a", 2: "b", 3: "b"}, 4: {1: "b", 2: "b", 3: "b"}}
    got = answer_agreement(answers)
    assert (got["fleiss_raters"], got["fleiss_items"], got["fleiss_excluded"]) == (3, 2, 2)
    assert_close(got, reference_question(answers), "tie")
    unanimous = answer_agreement({1: {1: "a", 2: "a"}, 2: {1: "a", 2: "a"}})
    assert unanimous["fleiss_kappa"] is None and unanimous["krippendorff_alpha"] is None
    nothing = answer_agreement({1: {1: "a"}})
    assert nothing["items_rated"] == 0 and nothing["fleiss_raters"] is None and nothing["answers"] == {"a": 1}


def test_segment_summary_counts_infinite_hd95_apart() -> None:
    pairs = [{"label": "Liver", "dice": d, "hd95_mm": h} for d, h in ((0.9, 2.0), (0.7, 4.5), (0.8, None), (0.5, 9.0))]
    got = segment_agreement(pairs + [{"label": "Other", "dice": 0.0, "hd95_mm": None}], ["Liver", "Cyst"])
    assert list(got) == ["Liver", "Cyst", "Other"]
    assert_close(got["Liver"]["dice"], reference_summary([0.9, 0.7, 0.8, 0.5]), "dice")
    assert_close(got["Liver"]["hd95_mm"], reference_summary([2.0, 4.5, 9.0]), "hd95")
    assert got["Liver"]["hd95_infinite"] == 1 and got["Liver"]["pairs"] == 4
    assert got["Cyst"] == {"pairs": 0, "dice": distribution_summary([]), "hd95_mm": distribution_summary([]),
                           "hd95_infinite": 0}
    assert got["Other"]["hd95_infinite"] == 1 and got["Other"]["hd95_mm"]["n"] == 0


# --- the quality world ----------------------------------------------------------------------------------------


def world_answers(item_names: set[str]) -> dict[str, dict[str, dict[str, str]]]:
    """question -> item -> reader -> answer of the world's first reads that were submitted or done."""
    out: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for read in READS:
        if read.purpose == "read" and read.status in ("submitted", "done") and read.answer and read.item in item_names:
            out[QUESTION].setdefault(read.item, {})[read.reader] = read.answer
    return out


def world_segments(item_names: set[str]) -> dict[str, Any]:
    """Per label: the summaries of the CT head reads' pairwise Dice and HD95 (the world's one consensus)."""
    spacing = (SLICE_SPACING, PIXEL_SPACING[0], PIXEL_SPACING[1])
    dice: dict[str, list[float]] = defaultdict(list)
    hd95: dict[str, list[float]] = defaultdict(list)
    infinite: Counter[str] = Counter()
    if "ct_head" in item_names:
        a, b = MASKS["r1_ct"], MASKS["r2_ct"]
        for name, value in numpy_dice_per_label(a, b).items():
            dice[name].append(value)
            number = next(n for n, label in LABEL_NAMES.items() if label == name)
            distance = reference_hd95(a == number, b == number, spacing)
            if math.isfinite(distance):
                hd95[name].append(distance)
            else:
                infinite[name] += 1
    return {
        label: {"pairs": len(dice[label]), "dice": reference_summary(dice[label]),
                "hd95_mm": reference_summary(hd95[label]), "hd95_infinite": infinite[label]}
        for label in (LABEL_NAMES[n] for n in sorted(LABEL_NAMES))
    }


def test_project_agreement_equals_the_reference_on_the_world(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    with session_scope(world.sessions) as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        report = quality.project_quality(session, world.orthanc, project)
    agreement = report["agreement"]
    assert agreement["questions"] == [QUESTION]
    assert agreement["labels"] == [LABEL_NAMES[n] for n in sorted(LABEL_NAMES)]
    scopes = [("overall", set(ITEMS), agreement["overall"])]
    scopes += [(split, {n for n, s in ITEMS.items() if s.split == split}, block)
               for split, block in agreement["splits"].items()]
    assert set(agreement["splits"]) == {spec.split for spec in ITEMS.values()}
    for where, names, block in scopes:
        wanted = reference_question(world_answers(names).get(QUESTION, {}))
        assert_close(block["questions"][QUESTION], wanted, f"{where} {QUESTION}")
        assert_close(block["segments"], world_segments(names), f"{where} segments")

    # Spelled out once: CT head (yes, yes) and MR head (no, yes). Fleiss: P_i = 1, 0; p_yes 3/4, p_no 1/4,
    # so kappa = (1/2 - 5/8) / (3/8) = -1/3; alpha: 1 - (n - 1) D_o / D_e = 1 - 3 * 2 / 6 = 0.
    overall = agreement["overall"]["questions"][QUESTION]
    assert overall["items_rated"] == 2 and overall["answers"] == {"no": 1, "yes": 3}
    assert overall["fleiss_kappa"] == pytest.approx(-1 / 3, abs=1e-12)
    assert overall["krippendorff_alpha"] == pytest.approx(0.0, abs=1e-12)
    liver = agreement["overall"]["segments"]["Liver"]
    assert liver["pairs"] == 1 and liver["dice"]["iqr"] == 0.0
    assert liver["hd95_mm"]["median"] == pytest.approx(
        reference_hd95(MASKS["r1_ct"] == 3, MASKS["r2_ct"] == 3, (SLICE_SPACING, *PIXEL_SPACING)), abs=1e-9)
    assert agreement["overall"]["segments"]["Cyst"]["pairs"] == 0  # neither read drew a cyst


def test_agreement_chart_draws_negative_coefficients_left_of_a_zero_line() -> None:
    svg = str(bar_chart([("κ", -0.5), ("α", 0.5), ("none", None)], title="t", max_value=1.0, min_value=-1.0,
                        width=400, label_width=100))
    span = 400 - 100 - 70  # width - labels - value column
    zero = 100 + span / 2
    bar = r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)" height="18" fill="#\w+" rx="3" data-value="([-\d.]+)"'
    bars = {float(v): (float(x), float(w)) for x, w, v in re.findall(bar, svg)}
    assert bars[-0.5] == pytest.approx((zero - span / 4, span / 4), abs=0.06)
    assert bars[0.5] == pytest.approx((zero, span / 4), abs=0.06)
    assert f'x1="{zero:.1f}"' in svg and "-0.50" in svg and "–" in svg
