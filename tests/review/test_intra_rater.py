"""Intra-rater reliability with real SEGs and SRs in a real Orthanc: each repeat read is compared with the same
reader's first read (per label Dice of the SEGs, Cohen's kappa of the SR answers); the numbers equal an
independent numpy computation on the known masks, and a second report reads nothing from Orthanc again."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from pacslabel.db import session_scope
from pacslabel.review.intra_rater import intra_rater_by_reader, repeat_pairs
from pacslabel.tasks.models import Task
from tests.review.test_quality_world import LABEL_NAMES, MASKS, READS, QualityWorld, quality_world  # noqa: F401

pytestmark = [pytest.mark.orthanc, pytest.mark.postgres]


class CountingOrthanc:
    """The real client, counting the instances it retrieves (SEGs and SRs)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.retrieved: list[str] = []

    def retrieve_instance(self, study: str, series: str, sop: str, *args: Any, **kwargs: Any) -> Any:
        self.retrieved.append(sop)
        return self.client.retrieve_instance(study, series, sop, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def numpy_dice_per_label(a: Any, b: Any) -> dict[str, float]:
    """Dice per label over the labels either array holds (independent of review.agreement)."""
    labels = sorted(set(a[a > 0].tolist()) | set(b[b > 0].tolist()))
    out = {}
    for label in labels:
        x, y = a == label, b == label
        out[LABEL_NAMES[label]] = 2.0 * float((x & y).sum()) / float(x.sum() + y.sum())
    return out


def kappa(first: list[str], repeat: list[str]) -> float:
    """Cohen's kappa from its definition: (p_o - p_e) / (1 - p_e)."""
    n = len(first)
    categories = set(first) | set(repeat)
    p_o = sum(1 for a, b in zip(first, repeat, strict=True) if a == b) / n
    p_e = sum((first.count(c) / n) * (repeat.count(c) / n) for c in categories)
    return (p_o - p_e) / (1 - p_e)


def test_repeat_reads_agree_with_first_reads_as_numpy_computes(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    spy = CountingOrthanc(world.orthanc)
    with session_scope(world.sessions) as session:
        report = intra_rater_by_reader(session, spy, project_ids=[world.project_id])  # type: ignore[arg-type]
    assert [r.username for r in report] == ["reader1"]  # reader2 has no repeat
    reader1 = report[0]

    repeats = [r for r in READS if r.purpose == "repeat"]
    firsts = {r.item: r for r in READS if r.purpose == "read" and r.reader == "reader1"}
    per_label: dict[str, list[float]] = defaultdict(list)
    for repeat in repeats:
        assert repeat.mask is not None
        first_mask = firsts[repeat.item].mask
        assert first_mask is not None
        for label, value in numpy_dice_per_label(MASKS[first_mask], MASKS[repeat.mask]).items():
            per_label[label].append(value)
    assert reader1.repeats == reader1.segmentation_pairs == len(repeats) == 2
    assert set(reader1.dice) == set(per_label) == {"Liver", "Liver lesion"}
    for label, values in per_label.items():
        assert reader1.dice[label] == pytest.approx(sum(values) / len(values), abs=1e-12)
    everything = [v for values in per_label.values() for v in values]
    assert reader1.mean_dice == pytest.approx(sum(everything) / len(everything), abs=1e-12)
    # The MR head repeat drew a lesion the first read did not: that label's Dice there is 0.
    assert min(per_label["Liver lesion"]) == 0.0

    first_answers = [str(firsts[r.item].answer) for r in repeats]
    repeat_answers = [str(r.answer) for r in repeats]
    assert reader1.answer_pairs == 2
    assert reader1.kappa["lesion_present"] == pytest.approx(kappa(first_answers, repeat_answers), abs=1e-12)
    assert reader1.answer_agreement == pytest.approx(
        sum(a == b for a, b in zip(first_answers, repeat_answers, strict=True)) / 2)

    # Both SEGs and both SRs of each pair were read once; the second report is served from the cache.
    assert len(spy.retrieved) == 8
    spy.retrieved.clear()
    with session_scope(world.sessions) as session:
        again = intra_rater_by_reader(session, spy, project_ids=[world.project_id])  # type: ignore[arg-type]
    assert spy.retrieved == []
    assert again == report


def test_a_repeat_without_a_completed_first_read_is_not_compared(quality_world: QualityWorld) -> None:  # noqa: F811
    world = quality_world
    with session_scope(world.sessions) as session:
        first = session.get(Task, world.tasks[("reader1", "mr_head", "read")])
        assert first is not None
        first.status = "skipped"  # the first read was given up: there is nothing to compare the repeat with
    with session_scope(world.sessions) as session:
        pairs = repeat_pairs(session, project_ids=[world.project_id])
    assert [(p.item_id, p.reader_id) for p in pairs] == [(world.items["ct_head"], world.users["reader1"])]
