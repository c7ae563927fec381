"""Intra-rater reliability: each repeat read (TaskPurpose.REPEAT) against the same reader's first read of the
same item.

- Segmentations: per protocol label, the Dice of the repeat's latest SEG version with the first read's latest
  SEG version (``review.agreement.intra_rater_agreement``; labels that either read drew).
- Classification answers: per question, Cohen's kappa of (first answer, repeat answer) over a reader's repeats
  (``review.agreement.cohen_kappa``), plus the observed share of equal answers (kappa is undefined when a
  reader gave one answer throughout; the share still says something).

A pair's result depends only on the two (immutable) versions, so it is cached by their ids: the dashboard
reads each SEG from Orthanc once per process, not once per request.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationModality, AnnotationVersion
from pacslabel.orthanc.client import OrthancClient
from pacslabel.review.agreement import cohen_kappa, intra_rater_agreement
from pacslabel.review.quality_reading import (
    FACTS,
    chunks,
    label_names,
    protocol_of_task,
    read_protocol_labels,
    report_answers,
)
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import READ_COMPLETE, TaskPurpose
from pacslabel.users.models import User

__all__ = [
    "IntraRaterPair",
    "ReaderIntraRater",
    "intra_rater_by_reader",
    "pair_results",
    "repeat_pairs",
    "segmentation_dice",
    "summarise",
]


@dataclass
class IntraRaterPair:
    """One repeat read and the first read it is compared with (latest versions of each task)."""

    reader_id: int
    project_id: int
    item_id: int
    first_task_id: int
    repeat_task_id: int
    first_seg_id: int | None
    repeat_seg_id: int | None
    first_sr_id: int | None
    repeat_sr_id: int | None
    dice: dict[str, float] = field(default_factory=dict)  # protocol label name -> Dice
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)  # question id -> (first, repeat)


@dataclass
class ReaderIntraRater:
    """One reader's intra-rater numbers over a set of repeats."""

    reader_id: int
    username: str
    repeats: int  # repeats compared (both reads complete)
    segmentation_pairs: int  # repeats where both reads have a SEG
    dice: dict[str, float]  # label -> mean Dice over the repeats where either read drew the label
    mean_dice: float | None  # mean over all (repeat, label) values
    kappa: dict[str, float | None]  # question id -> Cohen's kappa (None: undefined)
    answer_agreement: float | None  # share of equal answers over all questions and repeats
    answer_pairs: int


def _latest_versions(session: Session, task_ids: Sequence[int]) -> dict[tuple[int, str], int]:
    """(task id, modality) -> id of the task's latest version of that modality, in one query."""
    latest: dict[tuple[int, str], int] = {}
    for chunk in chunks(task_ids):
        for task_id, modality, version_id in session.execute(
            select(AnnotationVersion.task_id, AnnotationVersion.modality, AnnotationVersion.id)
            .where(AnnotationVersion.task_id.in_(chunk))
            .order_by(AnnotationVersion.version)
        ):
            latest[(task_id, modality)] = version_id  # ascending versions: the last one wins
    return latest


def repeat_pairs(
    session: Session, *, project_ids: Iterable[int] | None = None, reader_ids: Iterable[int] | None = None
) -> list[IntraRaterPair]:
    """Completed repeats that have a completed first read by the same reader, oldest repeat first (a
    few queries whatever the number of repeats)."""
    complete = [s.value for s in READ_COMPLETE]
    query = select(Task).where(Task.purpose == TaskPurpose.REPEAT.value, Task.status.in_(complete))
    if project_ids is not None:
        query = query.where(Task.project_id.in_(list(project_ids)))
    if reader_ids is not None:
        query = query.where(Task.reader_id.in_(list(reader_ids)))
    repeats = list(session.scalars(query.order_by(Task.submitted_at, Task.id)))
    if not repeats:
        return []
    firsts = {
        (t.item_id, t.reader_id): t
        for chunk in chunks(r.item_id for r in repeats)
        for t in session.scalars(
            select(Task).where(
                Task.item_id.in_(chunk), Task.purpose == TaskPurpose.READ.value, Task.status.in_(complete)
            )
        )
    }
    # A first read that was skipped or is unfinished leaves nothing to compare the repeat with.
    found = [(r, firsts[(r.item_id, r.reader_id)]) for r in repeats if (r.item_id, r.reader_id) in firsts]
    latest = _latest_versions(session, [t.id for pair in found for t in pair])
    seg, sr = AnnotationModality.SEG.value, AnnotationModality.SR.value
    return [
        IntraRaterPair(
            reader_id=repeat.reader_id,
            project_id=repeat.project_id,
            item_id=repeat.item_id,
            first_task_id=first.id,
            repeat_task_id=repeat.id,
            first_seg_id=latest.get((first.id, seg)),
            repeat_seg_id=latest.get((repeat.id, seg)),
            first_sr_id=latest.get((first.id, sr)),
            repeat_sr_id=latest.get((repeat.id, sr)),
        )
        for repeat, first in found
    ]


def segmentation_dice(
    session: Session, orthanc: OrthancClient, first: AnnotationVersion, repeat: AnnotationVersion
) -> dict[str, float]:
    """Per protocol label Dice of two SEG versions (labels either drew); cached by the two version ids."""

    def compute() -> dict[str, float]:
        task = session.get(Task, repeat.task_id)
        assert task is not None
        protocol = protocol_of_task(session, task)
        names = label_names(protocol)
        first_labels, spacing = read_protocol_labels(session, orthanc, first, protocol)
        repeat_labels, _ = read_protocol_labels(session, orthanc, repeat, protocol)
        return {
            names.get(a.label, str(a.label)): float(a.dice)
            for a in intra_rater_agreement(first_labels, repeat_labels, spacing)
        }

    return dict(FACTS.get_or_compute(("intra-dice", first.id, repeat.id), compute))


def pair_results(session: Session, orthanc: OrthancClient, pairs: Sequence[IntraRaterPair]) -> list[IntraRaterPair]:
    """Fill each pair's Dice (SEGs) and answer pairs (SRs) from the stored objects."""
    for pair in pairs:
        if pair.first_seg_id is not None and pair.repeat_seg_id is not None:
            first, repeat = (
                session.get(AnnotationVersion, pair.first_seg_id),
                session.get(AnnotationVersion, pair.repeat_seg_id),
            )
            assert first is not None and repeat is not None
            pair.dice = segmentation_dice(session, orthanc, first, repeat)
        if pair.first_sr_id is not None and pair.repeat_sr_id is not None:
            first_sr, repeat_sr = (
                session.get(AnnotationVersion, pair.first_sr_id),
                session.get(AnnotationVersion, pair.repeat_sr_id),
            )
            assert first_sr is not None and repeat_sr is not None
            first_answers = report_answers(session, orthanc, first_sr)
            repeat_answers = report_answers(session, orthanc, repeat_sr)
            pair.answers = {
                q: (first_answers[q], repeat_answers[q]) for q in sorted(first_answers.keys() & repeat_answers.keys())
            }
    return pairs


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarise(reader_id: int, username: str, pairs: Sequence[IntraRaterPair]) -> ReaderIntraRater:
    """Intra-rater numbers of one reader over ``pairs`` (already filled by :func:`pair_results`)."""
    per_label: dict[str, list[float]] = defaultdict(list)
    per_question: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pair in pairs:
        for label, value in pair.dice.items():
            per_label[label].append(value)
        for question, answers in pair.answers.items():
            per_question[question].append(answers)
    everything = [v for values in per_label.values() for v in values]
    answered = [a for values in per_question.values() for a in values]
    return ReaderIntraRater(
        reader_id=reader_id,
        username=username,
        repeats=len(pairs),
        segmentation_pairs=sum(1 for p in pairs if p.first_seg_id is not None and p.repeat_seg_id is not None),
        dice={label: float(sum(v) / len(v)) for label, v in sorted(per_label.items())},
        mean_dice=float(sum(everything) / len(everything)) if everything else None,
        kappa={
            q: _finite_or_none(cohen_kappa([a for a, _ in v], [b for _, b in v]))
            for q, v in sorted(per_question.items())
        },
        answer_agreement=sum(1 for a, b in answered if a == b) / len(answered) if answered else None,
        answer_pairs=len(answered),
    )


def intra_rater_by_reader(
    session: Session,
    orthanc: OrthancClient,
    *,
    project_ids: Iterable[int] | None = None,
    reader_ids: Iterable[int] | None = None,
) -> list[ReaderIntraRater]:
    """The per-reader intra-rater report: every completed repeat compared with the reader's first read."""
    pairs = pair_results(session, orthanc, repeat_pairs(session, project_ids=project_ids, reader_ids=reader_ids))
    by_reader: dict[int, list[IntraRaterPair]] = defaultdict(list)
    for pair in pairs:
        by_reader[pair.reader_id].append(pair)
    report = []
    for reader_id, reader_pairs in sorted(by_reader.items()):
        user = session.get(User, reader_id)
        report.append(summarise(reader_id, user.username if user else str(reader_id), reader_pairs))
    return report
