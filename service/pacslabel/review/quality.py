"""Reader quality and project composition: the numbers behind the dashboard, its JSON and its CSV.

:func:`reader_quality` and :func:`project_quality` return plain data (dicts, lists, numbers, strings); every
output (``/api/quality/...`` JSON, ``?format=csv``, the ``/quality`` page and its SVG plots) is made from
that one result, so they cannot disagree.

Definitions (per reader, then per group of their tasks):

- a *task* is a reading task (purpose read, repeat or arbitration) that was submitted at least once; it counts in
  the ISO week (``2026-W48``, UTC) of its last submission;
- *tasks done*: tasks that are submitted or done (a read returned to its reader is not done);
- *median time*: median of ``submitted_at - claimed_at`` in seconds over the tasks done;
- *rejection rate*: rejections / review decisions on the reader's tasks; *reasons* count the rejections;
- *agreement with consensus*: the Dice of the reader's SEG version with the item's latest consensus, per label,
  as recorded in ``consensus_results.reader_agreement``; the group value is the mean over (item, label);
- *agreement with ground truth*: the reader's protocol answers (latest SR of the read) against the outcome
  answers of the item: share of equal answers (accuracy) and Cohen's kappa over (question=answer) categories;
- *intra-rater*: repeats compared with the reader's first read (:mod:`pacslabel.review.intra_rater`): mean
  Dice over (repeat, label), Cohen's kappa over the answers; a repeat counts in its own week and groups.

Breakdowns: week, project, modality, body part, manufacturer, and modality x body part (so "good at CT head
but not MR head" shows up). The attributes of a task are those of its item's source series in the catalog.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationModality, AnnotationVersion
from pacslabel.annotations.repository import study_uid_of
from pacslabel.catalog.models import CatalogSeries
from pacslabel.orthanc.client import OrthancClient, OrthancError
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.repository import protocol_version
from pacslabel.review import intra_rater
from pacslabel.review.agreement import cohen_kappa
from pacslabel.review.ground_truth import ground_truth_answers
from pacslabel.review.models import ConsensusResult, FinalLabel, ReviewDecision
from pacslabel.review.quality_agreement import answer_agreement, segment_agreement
from pacslabel.review.quality_reading import (
    chunks,
    dice_with_stored_seg,
    label_names,
    label_volumes_ml,
    protocol_of_task,
    report_answers,
)
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import READ_COMPLETE, TaskPurpose, TaskStatus
from pacslabel.users.models import User

logger = logging.getLogger(__name__)

READING_PURPOSES = (TaskPurpose.READ.value, TaskPurpose.REPEAT.value, TaskPurpose.ARBITRATION.value)
DONE_STATUSES = tuple(s.value for s in READ_COMPLETE)
SUBMITTED_ONCE = (*DONE_STATUSES, TaskStatus.RETURNED.value)
UNKNOWN = "unknown"
ANNOTATION_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT"})
DIMENSIONS = ("week", "project", "modality", "body_part", "manufacturer", "modality_body_part")

# The columns of one metrics row, in output order (JSON keys, CSV columns, page tables).
METRIC_COLUMNS = (
    "tasks_done",
    "repeats_done",
    "median_seconds",
    "review_decisions",
    "rejections",
    "rejection_rate",
    "consensus_items",
    "consensus_dice",
    "ground_truth_answers",
    "ground_truth_accuracy",
    "ground_truth_kappa",
    "intra_repeats",
    "intra_dice",
    "intra_kappa",
    "intra_answer_agreement",
)


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class TaskFact:
    """Everything the quality numbers need about one reading task."""

    task_id: int
    reader_id: int
    project_slug: str
    item_id: int
    purpose: str
    done: bool
    week: str
    seconds: float | None
    modality: str
    body_part: str
    manufacturer: str
    decisions: int = 0
    reasons: list[str] = field(default_factory=list)
    consensus_dice: dict[str, float] | None = None  # label -> Dice with the item's consensus
    truth_pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (question, reader, truth)
    intra: intra_rater.IntraRaterPair | None = None

    def group(self, dimension: str) -> str:
        if dimension == "project":
            return self.project_slug
        if dimension == "modality_body_part":
            return f"{self.modality} {self.body_part}"
        return str(getattr(self, dimension))


# --- small numeric helpers ------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    if not pairs:
        return None
    value = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
    return None if math.isnan(value) else float(value)


def metrics(facts: Sequence[TaskFact]) -> dict[str, Any]:
    """The metrics row of one group of task facts (see the module docstring for the definitions)."""
    done = [f for f in facts if f.done]
    seconds = [f.seconds for f in done if f.seconds is not None]
    decisions = sum(f.decisions for f in facts)
    reasons = Counter(r for f in facts for r in f.reasons)
    rejections = sum(reasons.values())
    consensus = [f.consensus_dice for f in facts if f.consensus_dice]
    consensus_values = [v for d in consensus for v in d.values()]
    truth = [(f"{q}={a}", f"{q}={t}") for f in facts for q, a, t in f.truth_pairs]
    pairs = [f.intra for f in facts if f.intra is not None]
    intra_values = [v for p in pairs for v in p.dice.values()]
    intra_answers = [(f"{q}={a}", f"{q}={b}") for p in pairs for q, (a, b) in p.answers.items()]
    return {
        "tasks_done": len(done),
        "repeats_done": sum(1 for f in done if f.purpose == TaskPurpose.REPEAT.value),
        "median_seconds": float(statistics.median(seconds)) if seconds else None,
        "review_decisions": decisions,
        "rejections": rejections,
        "rejection_rate": rejections / decisions if decisions else None,
        "rejection_reasons": dict(sorted(reasons.items())),
        "consensus_items": len(consensus),
        "consensus_dice": _mean(consensus_values),
        "consensus_dice_by_label": {
            label: _mean([d[label] for d in consensus if label in d])
            for label in sorted({k for d in consensus for k in d})
        },
        "ground_truth_answers": len(truth),
        "ground_truth_accuracy": sum(1 for a, t in truth if a == t) / len(truth) if truth else None,
        "ground_truth_kappa": _kappa(truth),
        "intra_repeats": len(pairs),
        "intra_dice": _mean(intra_values),
        "intra_dice_by_label": {
            label: _mean([p.dice[label] for p in pairs if label in p.dice])
            for label in sorted({k for p in pairs for k in p.dice})
        },
        "intra_kappa": _kappa(intra_answers),
        "intra_answer_agreement": (
            sum(1 for a, b in intra_answers if a == b) / len(intra_answers) if intra_answers else None
        ),
    }


# --- gathering the facts --------------------------------------------------------------------------------------


def _item_attributes(session: Session, items: Iterable[ProjectItem]) -> dict[int, dict[str, str]]:
    """Modality, body part, manufacturer, institution and scanner of each item's source series ("A+B" when an
    item's series differ; "unknown" when the catalog does not say)."""
    items = list(items)
    by_uid: dict[str, CatalogSeries] = {}
    by_study: dict[int, list[CatalogSeries]] = defaultdict(list)
    studies = {item.study_id for item in items}
    for chunk in chunks(studies):
        for series in session.scalars(select(CatalogSeries).where(CatalogSeries.study_id.in_(chunk))):
            by_uid[series.series_instance_uid] = series
            if (series.modality or "") not in ANNOTATION_MODALITIES:
                by_study[series.study_id].append(series)
    out = {}
    for item in items:
        rows = [by_uid[uid] for uid in item.series_uids if uid in by_uid] or by_study.get(item.study_id, [])

        def joined(values: Iterable[str | None]) -> str:
            distinct = sorted({v.strip() for v in values if v and v.strip()})
            return "+".join(distinct) if distinct else UNKNOWN

        out[item.id] = {
            "modality": joined(s.modality for s in rows),
            "body_part": joined(s.body_part for s in rows),
            "manufacturer": joined(s.manufacturer for s in rows),
            "institution": joined(s.institution for s in rows),
            "scanner": joined(" ".join(p for p in (s.manufacturer, s.model) if p) for s in rows),
        }
    return out


def _latest(session: Session, task_ids: Sequence[int], modality: AnnotationModality) -> dict[int, AnnotationVersion]:
    latest: dict[int, AnnotationVersion] = {}
    for chunk in chunks(task_ids):
        for version in session.scalars(
            select(AnnotationVersion)
            .where(AnnotationVersion.task_id.in_(chunk), AnnotationVersion.modality == modality.value)
            .order_by(AnnotationVersion.version)
        ):
            latest[version.task_id] = version  # ascending: the last one wins
    return latest


def _latest_consensus(session: Session, item_ids: Sequence[int]) -> dict[int, ConsensusResult]:
    latest: dict[int, ConsensusResult] = {}
    for chunk in chunks(item_ids):
        for row in session.scalars(
            select(ConsensusResult).where(ConsensusResult.item_id.in_(chunk)).order_by(ConsensusResult.id)
        ):
            latest[row.item_id] = row  # ascending ids: the latest consensus wins
    return latest


def _named_labels(values: Mapping[str, Any], names: Mapping[int, str]) -> dict[str, float]:
    """Label keys as protocol label names (consensus rows key labels by number as text)."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        label = names.get(int(key), str(key)) if str(key).isdigit() else str(key)
        out[label] = float(value)
    return out


def _safe(what: str, compute: Callable[[], Any], default: Any) -> Any:
    """Numbers read from Orthanc are best effort: one unreadable object must not take the dashboard down."""
    try:
        return compute()
    except (OrthancError, ValueError) as error:
        logger.warning("quality: %s could not be read: %s", what, error)
        return default
    except Exception as error:  # noqa: BLE001 - e.g. AnnotationRejected from a SEG that no longer validates
        if getattr(error, "status_code", None) is None:
            raise
        logger.warning("quality: %s could not be read: %s", what, error)
        return default


def task_facts(
    session: Session,
    orthanc: OrthancClient | None,
    *,
    project_ids: Sequence[int],
    reader_ids: Sequence[int] | None = None,
) -> list[TaskFact]:
    """One fact per reading task of the projects that was submitted at least once."""
    if not project_ids:
        return []
    query = select(Task).where(
        Task.project_id.in_(list(project_ids)),
        Task.purpose.in_(READING_PURPOSES),
        Task.status.in_(SUBMITTED_ONCE),
        Task.submitted_at.is_not(None),
    )
    if reader_ids is not None:
        query = query.where(Task.reader_id.in_(list(reader_ids)))
    tasks = list(session.scalars(query.order_by(Task.id)))
    if not tasks:
        return []
    task_ids = [t.id for t in tasks]
    items = {
        i.id: i
        for chunk in chunks(t.item_id for t in tasks)
        for i in session.scalars(select(ProjectItem).where(ProjectItem.id.in_(chunk)))
    }
    attributes = _item_attributes(session, items.values())
    slugs = dict(session.execute(select(Project.id, Project.slug).where(Project.id.in_(list(project_ids)))).all())
    decisions: dict[int, list[ReviewDecision]] = defaultdict(list)
    for chunk in chunks(task_ids):
        for row in session.scalars(select(ReviewDecision).where(ReviewDecision.task_id.in_(chunk))):
            decisions[row.task_id].append(row)
    segs = _latest(session, task_ids, AnnotationModality.SEG)
    srs = _latest(session, task_ids, AnnotationModality.SR)
    consensus = _latest_consensus(session, list(items))
    truth = ground_truth_answers(session, list(items))
    protocols: dict[tuple[int, int], dict[str, Any]] = {}
    repeats = {
        p.repeat_task_id: p for p in intra_rater.repeat_pairs(session, project_ids=project_ids, reader_ids=reader_ids)
    }
    if orthanc is not None and repeats:
        for pair in repeats.values():
            _safe(
                f"repeat task {pair.repeat_task_id}",
                lambda p=pair: intra_rater.pair_results(session, orthanc, [p]),
                None,
            )
    facts = []
    for task in tasks:
        attrs = attributes[task.item_id]
        key = (task.project_id, task.protocol_version)
        if key not in protocols:
            protocols[key] = protocol_of_task(session, task)
        names = label_names(protocols[key])
        assert task.submitted_at is not None
        seconds = (task.submitted_at - task.claimed_at).total_seconds() if task.claimed_at is not None else None
        fact = TaskFact(
            task_id=task.id,
            reader_id=task.reader_id,
            project_slug=slugs.get(task.project_id, str(task.project_id)),
            item_id=task.item_id,
            purpose=task.purpose,
            done=task.status in DONE_STATUSES,
            week=iso_week(task.submitted_at),
            seconds=seconds,
            modality=attrs["modality"],
            body_part=attrs["body_part"],
            manufacturer=attrs["manufacturer"],
            decisions=len(decisions[task.id]),
            reasons=[d.reason or "(no reason)" for d in decisions[task.id] if d.decision == "reject"],
        )
        if task.purpose == TaskPurpose.READ.value:
            seg = segs.get(task.id)
            row = consensus.get(task.item_id)
            agreement = getattr(row, "reader_agreement", None) if row is not None else None
            if seg is not None and agreement:
                per_label = agreement.get(str(seg.id)) or agreement.get(seg.id)  # type: ignore[call-overload]
                if per_label:
                    fact.consensus_dice = _named_labels(per_label, names)
            elif (
                seg is not None
                and row is not None
                and orthanc is not None
                and seg.id in (row.inputs or [])
                and row.sop_instance_uid
                and row.series_instance_uid
            ):
                # A consensus row from before reader_agreement was recorded: compare with its SEG directly.
                fact.consensus_dice = _safe(
                    f"SEG version {seg.id} against consensus {row.id}",
                    lambda seg=seg, row=row, key=key: dice_with_stored_seg(
                        session, orthanc, seg, row.series_instance_uid, row.sop_instance_uid, protocols[key]
                    ),
                    None,
                )
            answers_truth = truth.get(task.item_id)
            sr = srs.get(task.id)
            if answers_truth and sr is not None and orthanc is not None:
                answers = _safe(f"SR version {sr.id}", lambda sr=sr: report_answers(session, orthanc, sr), {})
                fact.truth_pairs = [
                    (q, answers[q], answers_truth[q]) for q in sorted(answers.keys() & answers_truth.keys())
                ]
        if task.purpose == TaskPurpose.REPEAT.value and task.id in repeats:
            fact.intra = repeats[task.id]
        facts.append(fact)
    return facts


# --- the reports ----------------------------------------------------------------------------------------------


def reader_quality(
    session: Session,
    orthanc: OrthancClient | None,
    *,
    project_ids: Sequence[int],
    reader_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per reader: overall metrics and one metrics row per group of each breakdown dimension."""
    facts = task_facts(session, orthanc, project_ids=project_ids, reader_ids=reader_ids)
    by_reader: dict[int, list[TaskFact]] = defaultdict(list)
    for fact in facts:
        by_reader[fact.reader_id].append(fact)
    users = {u.id: u for chunk in chunks(by_reader) for u in session.scalars(select(User).where(User.id.in_(chunk)))}
    readers = []
    for reader_id in sorted(by_reader, key=lambda r: users[r].username if r in users else str(r)):
        reader_facts = by_reader[reader_id]
        breakdowns: dict[str, list[dict[str, Any]]] = {}
        for dimension in DIMENSIONS:
            groups: dict[str, list[TaskFact]] = defaultdict(list)
            for fact in reader_facts:
                groups[fact.group(dimension)].append(fact)
            breakdowns[dimension] = [{"group": g, **metrics(groups[g])} for g in sorted(groups)]
        user = users.get(reader_id)
        readers.append(
            {
                "reader_id": reader_id,
                "username": user.username if user else str(reader_id),
                "role": user.role if user else None,
                "overall": metrics(reader_facts),
                "breakdowns": breakdowns,
            }
        )
    return {
        "dimensions": list(DIMENSIONS),
        "metric_columns": list(METRIC_COLUMNS),
        "weeks": sorted({f.week for f in facts}),
        "readers": readers,
    }


def _final_answers(
    session: Session,
    orthanc: OrthancClient | None,
    item_tasks: Sequence[Task],
    truth: Mapping[str, str] | None,
    srs: Mapping[int, AnnotationVersion],
) -> dict[str, str]:
    """Ground truth when there is one, else the answer a strict majority of the item's reads gave."""
    if truth:
        return dict(truth)
    if orthanc is None:
        return {}
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    reads = [t for t in item_tasks if t.purpose == TaskPurpose.READ.value and t.status in DONE_STATUSES]
    for task in reads:
        sr = srs.get(task.id)
        if sr is not None:
            for question, answer in _safe(
                f"SR version {sr.id}", lambda sr=sr: report_answers(session, orthanc, sr), {}
            ).items():
                votes[question][answer] += 1
    final = {}
    for question, counter in votes.items():
        (answer, n), *rest = counter.most_common()
        if n * 2 > len(reads):
            final[question] = answer
    return final


def project_quality(session: Session, orthanc: OrthancClient | None, project: Project) -> dict[str, Any]:
    """Per split: items, final labels by source, label distribution (items whose final segmentation holds the
    label, and their mean volume), final answers, and the mix of manufacturers, institutions and scanners."""
    items = list(
        session.scalars(select(ProjectItem).where(ProjectItem.project_id == project.id).order_by(ProjectItem.id))
    )
    attributes = _item_attributes(session, items)
    finals = {
        f.item_id: f
        for chunk in chunks(i.id for i in items)
        for f in session.scalars(select(FinalLabel).where(FinalLabel.item_id.in_(chunk)))
    }
    tasks_by_item: dict[int, list[Task]] = defaultdict(list)
    for task in session.scalars(select(Task).where(Task.project_id == project.id).order_by(Task.id)):
        tasks_by_item[task.item_id].append(task)
    all_task_ids = [t.id for ts in tasks_by_item.values() for t in ts]
    srs = _latest(session, all_task_ids, AnnotationModality.SR)
    truth = ground_truth_answers(session, [i.id for i in items])
    current = protocol_version(session, project.id, project.protocol_version)
    protocol = dict(current.protocol) if current is not None else {}
    splits: dict[str, dict[str, Any]] = {}
    volumes: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        split = splits.setdefault(
            item.split,
            {
                "items": 0,
                "final_labels": 0,
                "final_sources": Counter(),
                "labels": {},
                "answers": defaultdict(Counter),
                "manufacturers": Counter(),
                "institutions": Counter(),
                "scanners": Counter(),
                "modalities": Counter(),
                "body_parts": Counter(),
            },
        )
        attrs = attributes[item.id]
        split["items"] += 1
        split["manufacturers"][attrs["manufacturer"]] += 1
        split["institutions"][attrs["institution"]] += 1
        split["scanners"][attrs["scanner"]] += 1
        split["modalities"][attrs["modality"]] += 1
        split["body_parts"][attrs["body_part"]] += 1
        final = finals.get(item.id)
        if final is not None:
            split["final_labels"] += 1
            split["final_sources"][final.source] += 1
            seg = _final_seg(session, final)
            if seg is not None and orthanc is not None:
                found = _safe(
                    f"final label of item {item.id}",
                    lambda seg=seg, item=item: label_volumes_ml(orthanc, item, *seg, protocol),
                    {},
                )
                for label, ml in found.items():
                    volumes[item.split][label].append(ml)
        for question, answer in _final_answers(
            session, orthanc, tasks_by_item[item.id], truth.get(item.id), srs
        ).items():
            split["answers"][question][answer] += 1
    label_order = list(label_names(protocol).values())
    agreement = _reader_agreement(session, orthanc, items, tasks_by_item, srs, protocol, label_order)
    for name, split in splits.items():
        split["labels"] = {
            label: {"items": len(volumes[name].get(label, [])), "mean_volume_ml": _mean(volumes[name].get(label, []))}
            for label in label_order
        }
        split["answers"] = {q: dict(sorted(c.items())) for q, c in sorted(split["answers"].items())}
        for key in ("final_sources", "manufacturers", "institutions", "scanners", "modalities", "body_parts"):
            split[key] = dict(sorted(split[key].items()))
    return {
        "project": {"id": project.id, "slug": project.slug, "name": project.name},
        "labels": label_order,
        "splits": dict(sorted(splits.items())),
        "agreement": agreement,
    }


def _reader_agreement(
    session: Session,
    orthanc: OrthancClient | None,
    items: Sequence[ProjectItem],
    tasks_by_item: Mapping[int, Sequence[Task]],
    srs: Mapping[int, AnnotationVersion],
    protocol: Mapping[str, Any],
    label_order: Sequence[str],
) -> dict[str, Any]:
    """Inter-rater agreement overall and per split (:mod:`pacslabel.review.quality_agreement`): per
    classification question the reads' answers, per segment label the pairwise Dice/HD95 of the consensus
    inputs."""
    # question -> item -> reader -> answer, from the latest SR of each first read (the later read of a reader wins).
    answers: dict[str, dict[int, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    if orthanc is not None:
        for item in items:
            for task in tasks_by_item.get(item.id, []):  # ascending ids
                sr = srs.get(task.id)
                if task.purpose != TaskPurpose.READ.value or task.status not in DONE_STATUSES or sr is None:
                    continue
                found = _safe(f"SR version {sr.id}", lambda sr=sr: report_answers(session, orthanc, sr), {})
                for question, answer in found.items():
                    answers[question][item.id][task.reader_id] = answer
    names = label_names(protocol)
    pairs_by_item: dict[int, list[dict[str, Any]]] = {}
    for item_id, row in _latest_consensus(session, [i.id for i in items]).items():
        pairs_by_item[item_id] = [
            {**pair, "label": names.get(int(pair["label"]), str(pair["label"]))}
            for pair in row.pairs or []
            if str(pair.get("label", "")).isdigit()
        ]
    asked = [str(q["id"]) for q in protocol.get("questions") or [] if q.get("answers")]
    questions = asked + sorted(set(answers) - set(asked))

    def block(wanted: set[int]) -> dict[str, Any]:
        return {
            "questions": {
                q: answer_agreement({i: by for i, by in answers.get(q, {}).items() if i in wanted}) for q in questions
            },
            "segments": segment_agreement(
                [p for i, ps in pairs_by_item.items() if i in wanted for p in ps], label_order
            ),
        }

    by_split: dict[str, set[int]] = defaultdict(set)
    for item in items:
        by_split[item.split].add(item.id)
    return {
        "questions": questions,
        "labels": list(label_order),
        "overall": block({i.id for i in items}),
        "splits": {name: block(ids) for name, ids in sorted(by_split.items())},
    }


def _final_seg(session: Session, final: FinalLabel) -> tuple[str, str, str] | None:
    """(study, series, SOP Instance UID) of the SEG a final label points to, if it has one."""
    if final.consensus_id is not None:
        row = session.get(ConsensusResult, final.consensus_id)
        if row is not None and row.sop_instance_uid and row.series_instance_uid:
            item = session.get(ProjectItem, row.item_id)
            assert item is not None
            return study_uid_of(session, item), row.series_instance_uid, row.sop_instance_uid
    if final.annotation_version_id is not None:
        version = session.get(AnnotationVersion, final.annotation_version_id)
        if version is not None and version.modality == AnnotationModality.SEG.value:
            return version.study_instance_uid, version.series_instance_uid, version.sop_instance_uid
    return None
