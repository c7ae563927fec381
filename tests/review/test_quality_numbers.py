"""The reader quality and project composition numbers on a world of known values (real database, real Orthanc
for the SEGs and SRs): every metric of every reader and group equals an independent computation from the
world's tables (tests/review/test_quality_world.py)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from pacslabel.db import session_scope
from pacslabel.review import quality
from pacslabel.review.models import ConsensusResult
from tests.annotations.sources import PIXEL_SPACING, SLICE_SPACING
from tests.review.test_intra_rater import kappa, numpy_dice_per_label
from tests.review.test_quality_world import (  # noqa: F401
    ITEMS,
    LABEL_NAMES,
    MASKS,
    QUESTION,
    READS,
    TRUTH,
    QualityWorld,
    ReadSpec,
    quality_world,
)

pytestmark = [pytest.mark.orthanc, pytest.mark.postgres]


def week_of(read: ReadSpec) -> str:
    year, week, _ = (read.claimed + timedelta(seconds=read.seconds)).isocalendar()
    return f"{year}-W{week:02d}"


def consensus_mask() -> np.ndarray:
    """Majority vote of the two CT head reads with ties to background: a voxel keeps a label both gave it."""
    a, b = MASKS["r1_ct"], MASKS["r2_ct"]
    return np.where(a == b, a, 0)


def group_key(read: ReadSpec, dimension: str, project: str) -> str:
    item = ITEMS[read.item]
    return {"week": week_of(read), "project": project, "modality": item.modality, "body_part": item.body_part,
            "manufacturer": item.manufacturer, "modality_body_part": f"{item.modality} {item.body_part}"}[dimension]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def kappa_or_none(a: list[str], b: list[str]) -> float | None:
    if not a:
        return None
    try:
        return kappa(a, b)
    except ZeroDivisionError:  # one category throughout: kappa is undefined
        return None


def expected(reads: list[ReadSpec]) -> dict[str, Any]:
    """The metrics of one group of the world's reads, from the definitions in review.quality's docstring."""
    done = [r for r in reads if r.status in ("submitted", "done")]
    decisions = [d for r in reads for d in r.decisions]
    reasons = Counter(reason for decision, reason in decisions if decision == "reject")
    consensus = [numpy_dice_per_label(MASKS[r.mask], consensus_mask()) for r in reads
                 if r.purpose == "read" and r.item == "ct_head" and r.mask]
    truth = [(f"{QUESTION}={r.answer}", f"{QUESTION}={TRUTH[r.item][QUESTION]}") for r in reads
             if r.purpose == "read" and r.answer and r.item in TRUTH]
    firsts = {(r.reader, r.item): r for r in READS if r.purpose == "read"}
    repeats = [r for r in reads if r.purpose == "repeat"]
    intra = [numpy_dice_per_label(MASKS[str(firsts[(r.reader, r.item)].mask)], MASKS[str(r.mask)]) for r in repeats]
    intra_answers = [(f"{QUESTION}={firsts[(r.reader, r.item)].answer}", f"{QUESTION}={r.answer}") for r in repeats]
    return {
        "tasks_done": len(done),
        "repeats_done": sum(1 for r in done if r.purpose == "repeat"),
        "median_seconds": statistics.median([r.seconds for r in done]) if done else None,
        "review_decisions": len(decisions),
        "rejections": sum(reasons.values()),
        "rejection_rate": sum(reasons.values()) / len(decisions) if decisions else None,
        "rejection_reasons": dict(reasons),
        "consensus_items": len(consensus),
        "consensus_dice": mean([v for d in consensus for v in d.values()]),
        "ground_truth_answers": len(truth),
        "ground_truth_accuracy": mean([1.0 if a == t else 0.0 for a, t in truth]),
        "ground_truth_kappa": kappa_or_none([a for a, _ in truth], [t for _, t in truth]),
        "intra_repeats": len(repeats),
        "intra_dice": mean([v for d in intra for v in d.values()]),
        "intra_kappa": kappa_or_none([a for a, _ in intra_answers], [b for _, b in intra_answers]),
        "intra_answer_agreement": mean([1.0 if a == b else 0.0 for a, b in intra_answers]),
    }


def assert_metrics(actual: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    for key, value in wanted.items():
        if isinstance(value, float):
            assert actual[key] == pytest.approx(value, abs=1e-12), f"{where}: {key}"
        else:
            assert actual[key] == value, f"{where}: {key}"


def test_reader_metrics_equal_an_independent_computation(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    with session_scope(world.sessions) as session:
        report = quality.reader_quality(session, world.orthanc, project_ids=[world.project_id])
    assert [r["username"] for r in report["readers"]] == ["reader1", "reader2"]
    assert report["weeks"] == sorted({week_of(r) for r in READS}) == ["2026-W47", "2026-W48"]
    for reader in report["readers"]:
        mine = [r for r in READS if r.reader == reader["username"]]
        assert_metrics(reader["overall"], expected(mine), f"{reader['username']} overall")
        for dimension in quality.DIMENSIONS:
            groups: dict[str, list[ReadSpec]] = defaultdict(list)
            for read in mine:
                groups[group_key(read, dimension, world.project_slug)].append(read)
            assert [g["group"] for g in reader["breakdowns"][dimension]] == sorted(groups), dimension
            for row in reader["breakdowns"][dimension]:
                assert_metrics(row, expected(groups[row["group"]]),
                               f"{reader['username']} {dimension}={row['group']}")

    reader1 = report["readers"][0]
    # The numbers the dashboard is for, spelled out once: reader1 is slower on MR head than on CT head, agrees
    # with the CT head consensus at the Dice numpy computes, and got one of two outcomes right.
    by_combo = {g["group"]: g for g in reader1["breakdowns"]["modality_body_part"]}
    assert by_combo["MR HEAD"]["median_seconds"] == statistics.median([1200, 900])
    assert by_combo["CT HEAD"]["median_seconds"] == statistics.median([300, 400])
    assert reader1["overall"]["rejection_reasons"] == {"incomplete segmentation": 1, "wrong label": 1}
    assert reader1["overall"]["ground_truth_accuracy"] == 0.5
    wanted = numpy_dice_per_label(MASKS["r1_ct"], consensus_mask())
    assert reader1["overall"]["consensus_dice_by_label"] == pytest.approx(wanted, abs=1e-12)
    assert set(wanted) == {"Liver", "Liver lesion"}


def test_reviewer_scope_and_reader_filter(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    with session_scope(world.sessions) as session:
        nobody = quality.reader_quality(session, world.orthanc, project_ids=[])
        only_reader2 = quality.reader_quality(session, world.orthanc, project_ids=[world.project_id],
                                              reader_ids=[world.users["reader2"]])
    assert nobody["readers"] == []
    assert [r["username"] for r in only_reader2["readers"]] == ["reader2"]
    assert_metrics(only_reader2["readers"][0]["overall"], expected([r for r in READS if r.reader == "reader2"]),
                   "reader2 only")


def test_project_composition_per_split(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    from pacslabel.projects.models import Project

    with session_scope(world.sessions) as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        report = quality.project_quality(session, world.orthanc, project)
    assert report["labels"] == [LABEL_NAMES[n] for n in sorted(LABEL_NAMES)]
    voxel_ml = SLICE_SPACING * PIXEL_SPACING[0] * PIXEL_SPACING[1] / 1000.0
    finals = {"ct_head": consensus_mask(), "mr_head": MASKS["r1_mr"]}  # the final labels the world set
    assert set(report["splits"]) == {spec.split for spec in ITEMS.values()}
    for name, spec in ITEMS.items():
        split = report["splits"][spec.split]  # one item per split in this world
        assert split["items"] == 1
        assert split["manufacturers"] == {spec.manufacturer: 1}
        assert split["institutions"] == {spec.institution: 1}
        assert split["scanners"] == {f"{spec.manufacturer} {spec.model}": 1}
        assert split["modalities"] == {spec.modality: 1}
        final = finals.get(name)
        assert split["final_labels"] == (1 if final is not None else 0)
        for number, label in LABEL_NAMES.items():
            voxels = int((final == number).sum()) if final is not None else 0
            assert split["labels"][label]["items"] == (1 if voxels else 0), (name, label)
            if voxels:
                assert split["labels"][label]["mean_volume_ml"] == pytest.approx(voxels * voxel_ml, rel=1e-9)
        # Answers: the outcome where there is one; no answers for the unread CT chest item.
        assert split["answers"] == ({QUESTION: {TRUTH[name][QUESTION]: 1}} if name in TRUTH else {})
    # The outcomes override consensus and single read as the source; the segmentation stays referenced.
    assert report["splits"]["validation"]["final_sources"] == {"ground_truth": 1}
    assert report["splits"]["train"]["final_sources"] == {"ground_truth": 1}


def test_consensus_rows_without_reader_agreement_are_compared_with_the_consensus_seg(
        quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    with session_scope(world.sessions) as session:
        row = session.scalar(select(ConsensusResult).where(ConsensusResult.item_id == world.items["ct_head"]))
        assert row is not None and row.reader_agreement  # the workflow records it
        row.reader_agreement = None  # as a row from before the column existed
    with session_scope(world.sessions) as session:
        report = quality.reader_quality(session, world.orthanc, project_ids=[world.project_id])
    for reader in report["readers"]:
        mask = MASKS["r1_ct" if reader["username"] == "reader1" else "r2_ct"]
        wanted = numpy_dice_per_label(mask, consensus_mask())
        assert reader["overall"]["consensus_dice_by_label"] == pytest.approx(wanted, abs=1e-12)
