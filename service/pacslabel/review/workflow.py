"""Review workflow: approve / reject a submitted read, consensus once every read of an item is approved,
one arbitration task when readers disagree, one current final label per item.

Decisions are append-only rows; the read task itself moves through the task state machine
(submitted -> done on approval, submitted -> returned on rejection, and the reader's resubmission comes back
to the queue). A rejection's reason must be one of the protocol's rejection reasons (`return_to_reader`
checks it against the protocol version the read was made under).
"""

from __future__ import annotations

import math
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from pacslabel.annotations import repository as annotation_repository
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.annotations.protocol_mapping import ProtocolLabel, normalise_label
from pacslabel.annotations.references import reference_inputs
from pacslabel.annotations.seg_building import SegmentSpec, build_segmentation, segment_specs_from_seg
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import load_source, protocol_labels
from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import Conflict, Forbidden
from pacslabel.orthanc.client import OrthancClient, OrthancError
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import ProjectItem
from pacslabel.projects.schema import ProjectSpec
from pacslabel.projects.service import may_review, project_spec
from pacslabel.review import repository
from pacslabel.review.agreement import dice, foreground_bounding_box, pairwise_agreement
from pacslabel.review.consensus import majority_vote, staple
from pacslabel.review.models import (
    ConsensusMethod,
    ConsensusResult,
    Decision,
    FinalLabel,
    FinalSource,
    ReviewDecision,
)
from pacslabel.tasks.models import Task
from pacslabel.tasks.service import assign_task, mark_done, return_to_reader, submit_task
from pacslabel.tasks.states import TaskPurpose, TaskStatus, check_transition
from pacslabel.users.models import Role, User

CONSENSUS_AUTHOR = "pacslabel^consensus"
CONSENSUS_SERIES_NUMBER = 900


# --- decisions ----------------------------------------------------------------------------------------------


def check_reviewer(session: Session, reviewer: User, read_task: Task) -> None:
    """Only a reviewer of the read's project (or an admin) reviews it, never their own read or an item they
    read themselves (independence of review)."""
    if read_task.purpose != TaskPurpose.READ.value or read_task.slot is None:
        raise Conflict(f"task {read_task.id} is not a read that is reviewed")
    project = project_repository.get_project(session, read_task.project_id)
    assert project is not None
    if reviewer.role != Role.ADMIN.value and not may_review(project_spec(project), reviewer):
        raise Forbidden(f"{reviewer.username} is not a reviewer of project {project.slug}")
    own = [t for t in repository.slot_reads(session, read_task.item_id) if t.reader_id == reviewer.id]
    if own:
        raise Forbidden("a reviewer does not review reads of an item they read themselves")


def _decide(
    session: Session, reviewer: User, read_task: Task, decision: Decision, reason: str | None, comment: str | None
) -> ReviewDecision:
    version = repository.latest_seg(session, read_task.id)
    row = repository.add_decision(
        session,
        ReviewDecision(
            task_id=read_task.id,
            reviewer_id=reviewer.id,
            decision=decision.value,
            reason=reason,
            comment=(comment or "").strip() or None,
            annotation_version_id=version.id if version else None,
            created_at=utcnow(),
        ),
    )
    record(
        session,
        reviewer.username,
        f"review_{decision.value}",
        "task",
        read_task.id,
        item_id=read_task.item_id,
        decision_id=row.id,
        annotation_version_id=row.annotation_version_id,
        reason=reason,
    )
    return row


def approve(
    session: Session, review_task: Task | None, reviewer: User, read_task: Task, *, orthanc: OrthancClient | None = None
) -> ReviewDecision:
    """Approve a submitted read: it becomes done. When it was the last read of its item to be approved, the
    item is finished (consensus, arbitration, final label; needs ``orthanc`` to read the SEGs)."""
    check_reviewer(session, reviewer, read_task)
    mark_done(session, read_task, reviewer.username)  # raises Conflict unless the read is submitted
    row = _decide(session, reviewer, read_task, Decision.APPROVE, None, None)
    item = project_repository.get_item(session, read_task.item_id)
    assert item is not None
    if all_reads_approved(session, item.id):
        if review_task is not None and review_task.status == TaskStatus.IN_PROGRESS.value:
            # The review task moves in_progress -> submitted -> done (the task state machine has no shortcut).
            check_transition(review_task.id, review_task.status, TaskStatus.SUBMITTED)
            review_task.status = TaskStatus.SUBMITTED.value
            review_task.submitted_at = utcnow()
            mark_done(session, review_task, reviewer.username)
        if orthanc is not None:
            finish_item(session, orthanc, item, reviewer)
    return row


def reject(
    session: Session, review_task: Task | None, reviewer: User, read_task: Task, reason: str, comment: str | None = None
) -> ReviewDecision:
    """Send a submitted read back to its reader with a protocol rejection reason; the reader's next submitted
    version comes back to the review queue."""
    check_reviewer(session, reviewer, read_task)
    return_to_reader(session, read_task, reviewer.username, reason)  # checks the reason and the state
    return _decide(session, reviewer, read_task, Decision.REJECT, reason, comment)


def all_reads_approved(session: Session, item_id: int) -> bool:
    reads = repository.slot_reads(session, item_id)
    return bool(reads) and all(t.status == TaskStatus.DONE.value for t in reads)


# --- consensus ----------------------------------------------------------------------------------------------


def source_series_uid(seg: Dataset, item: ProjectItem) -> str:
    for ref in seg.get("ReferencedSeriesSequence", []):
        if str(ref.SeriesInstanceUID) in item.series_uids:
            return str(ref.SeriesInstanceUID)
    return str(item.series_uids[0])


def on_protocol_numbers(labels: np.ndarray, seg: Dataset, protocol: list[ProtocolLabel]) -> np.ndarray:
    """Renumber a read's segments to the protocol's label order (1 = first protocol label): readers may number
    segments differently; the label name is what they agree on."""
    index = {normalise_label(label.name): number for number, label in enumerate(protocol, start=1)}
    out = np.zeros(labels.shape, dtype=np.uint16)
    for spec in segment_specs_from_seg(seg):
        number = index.get(normalise_label(spec.label))
        if number is None:
            raise Conflict(f"segment {spec.number} {spec.label!r} of {seg.SOPInstanceUID} is not a protocol label")
        out[labels == spec.number] = number
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def reader_weights(session: Session, spec: ProjectSpec, versions: list[AnnotationVersion]) -> dict[str, float] | None:
    """Weights by seniority from the project file (per user, else per role, else 1) keyed like the reads
    (annotation version id as text); None when the project gives no weights (equal weights)."""
    weights = spec.consensus.weights
    if weights is None:
        return None
    result: dict[str, float] = {}
    for version in versions:
        read_task = session.get(Task, version.task_id)
        reader = session.get(User, read_task.reader_id) if read_task else None
        if reader is None:
            result[str(version.id)] = 1.0
        elif reader.username in weights.users:
            result[str(version.id)] = float(weights.users[reader.username])
        else:
            result[str(version.id)] = float(weights.roles.get(Role(reader.role), 1.0))
    if not any(result.values()):
        raise Conflict("the project's consensus weights give every reader of this item weight 0")
    return result


def _per_label_dice(a: np.ndarray, b: np.ndarray, labels: list[int]) -> dict[str, float]:
    return {str(label): float(dice(a == label, b == label)) for label in labels}


def compute_consensus(
    session: Session, orthanc: OrthancClient, item: ProjectItem, actor: User, versions: list[AnnotationVersion]
) -> ConsensusResult:
    """Pairwise agreement and the project's consensus (majority vote or STAPLE, reader weights by seniority
    when the project file says so) of the given SEG versions (one per reader), stored with the consensus SEG
    in Orthanc; each reader's Dice with the consensus, and the other method's Dice with it for comparison.
    Idempotent: the same inputs give back the stored row."""
    inputs = sorted(v.id for v in versions)
    existing = repository.consensus_for_inputs(session, item.id, inputs)
    if existing is not None:
        return existing
    read_task = session.get(Task, versions[0].task_id)
    assert read_task is not None
    project = project_repository.get_project(session, item.project_id)
    assert project is not None
    spec = project_spec(project)
    protocol = protocol_labels(annotation_repository.protocol_of(session, read_task))
    study_uid = annotation_repository.study_uid_of(session, item)
    source: SourceSeries | None = None
    reads: dict[str, np.ndarray] = {}
    for version in sorted(versions, key=lambda v: v.id):
        seg = orthanc.retrieve_instance(study_uid, version.series_instance_uid, version.sop_instance_uid)
        if source is None:
            source = load_source(orthanc, item, study_uid, source_series_uid(seg, item))
        reads[str(version.id)] = on_protocol_numbers(read_label_array(seg, source), seg, protocol)
    assert source is not None
    spacing = (float(source.spacing), float(source.pixel_spacing[0]), float(source.pixel_spacing[1]))
    pairs = pairwise_agreement(reads, spacing, workers=1)
    per_label: dict[str, list[float]] = {}
    for pair in pairs:
        per_label.setdefault(str(pair.label), []).append(float(pair.dice))
    mean_dice = {label: float(np.mean(values)) for label, values in per_label.items()}
    # No label drawn by anyone: the readers agree (on nothing).
    min_dice = min((float(p.dice) for p in pairs), default=1.0)
    weights = reader_weights(session, spec, versions)
    method = ConsensusMethod(spec.consensus.method)
    methods = {ConsensusMethod.MAJORITY: majority_vote, ConsensusMethod.STAPLE: staple}
    consensus = methods[method](reads, weights)
    other_method = ConsensusMethod.STAPLE if method == ConsensusMethod.MAJORITY else ConsensusMethod.MAJORITY
    other = methods[other_method](reads, weights)
    # Dice with the consensus on the bounding box of everything drawn (outside it every mask is empty).
    box = foreground_bounding_box([*reads.values(), consensus.labels, other.labels]) or ()
    chosen = consensus.labels[box]
    labels = sorted({int(label) for label in per_label} | {int(v) for v in np.unique(chosen) if v})
    agreement = {name: _per_label_dice(array[box], chosen, labels) for name, array in reads.items()}
    comparison = {
        "method": other_method.value,
        "dice_to_consensus": _per_label_dice(other.labels[box], chosen, labels),
    }
    stored = _store_consensus_seg(orthanc, consensus.labels, source, protocol, versions, method) if protocol else None
    series_uid, sop_uid = stored if stored else (None, None)
    row = repository.add_consensus(
        session,
        ConsensusResult(
            item_id=item.id,
            method=method.value,
            mean_dice=mean_dice,
            min_dice=min_dice,
            inputs=inputs,
            pairs=[
                {
                    "label": p.label,
                    "a": int(p.reader_a),
                    "b": int(p.reader_b),
                    "dice": float(p.dice),
                    "hd95_mm": _finite(p.hd95_mm),
                }
                for p in pairs
            ],
            reader_agreement=agreement,
            reader_weights=dict(consensus.reader_weights) if weights is not None else None,
            comparison=comparison,
            sop_instance_uid=sop_uid,
            series_instance_uid=series_uid,
            created_at=utcnow(),
        ),
    )
    record(
        session,
        actor.username,
        "review_consensus",
        "project_item",
        item.id,
        consensus_id=row.id,
        inputs=inputs,
        min_dice=min_dice,
        method=method.value,
        sop_instance_uid=sop_uid,
    )
    return row


def _store_consensus_seg(
    orthanc: OrthancClient,
    labels: np.ndarray,
    source: SourceSeries,
    protocol: list[ProtocolLabel],
    versions: list[AnnotationVersion],
    method: ConsensusMethod,
) -> tuple[str, str] | None:
    if not np.any(labels):
        return None  # an empty consensus (readers agree there is nothing) is not a SEG
    specs = [
        SegmentSpec(number, label.name, label.category, label.type, label.color)
        for number, label in enumerate(protocol, start=1)
    ]
    seg = build_segmentation(
        labels,
        source,
        specs,
        series_instance_uid=str(hd.UID()),
        series_number=CONSENSUS_SERIES_NUMBER,
        instance_number=1,
        author=CONSENSUS_AUTHOR,
        series_description="consensus",
    )
    reference_inputs(seg, str(seg.StudyInstanceUID), versions, f"{method.value} consensus of {len(versions)} reads")
    response = orthanc.store_instances([seg])
    if response.get("FailedSOPSequence"):
        raise OrthancError(f"Orthanc refused the consensus SEG {seg.SOPInstanceUID}")
    return str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)


# --- finishing an item --------------------------------------------------------------------------------------


def finish_item(session: Session, orthanc: OrthancClient, item: ProjectItem, actor: User) -> FinalLabel | None:
    """Once every read of the item is approved: a single read is the final label; several reads give a
    consensus (the final label) and, below the project's agreement threshold, one arbitration task."""
    repository.lock_item(session, item.id)
    if not all_reads_approved(session, item.id):
        return None
    versions = [v for t in repository.slot_reads(session, item.id) if (v := repository.latest_seg(session, t.id))]
    if not versions:
        return None  # e.g. every reader excluded the item: nothing to label
    if len(versions) == 1:
        return set_final_label(session, item.id, FinalSource.SINGLE_READ, actor, annotation_version_id=versions[0].id)
    result = compute_consensus(session, orthanc, item, actor, versions)
    project = project_repository.get_project(session, item.project_id)
    assert project is not None
    if result.min_dice < project_spec(project).review.agreement_threshold:
        ensure_arbitration(session, item, actor)
    return set_final_label(session, item.id, FinalSource.CONSENSUS, actor, consensus_id=result.id)


def ensure_arbitration(session: Session, item: ProjectItem, actor: User) -> Task | None:
    """Exactly one arbitration task per item: an existing one is returned, never a second created. It goes to
    the acting reviewer when they may arbitrate, else to another reviewer of the project who did not read it;
    None (audited) when there is nobody."""
    existing = repository.item_task(session, item.id, TaskPurpose.ARBITRATION)
    if existing is not None:
        return existing
    project = project_repository.get_project(session, item.project_id)
    assert project is not None
    spec = project_spec(project)
    readers = {t.reader_id for t in repository.slot_reads(session, item.id)}
    candidates = [actor] if actor.role != Role.ADMIN.value else []
    candidates += [u for u in repository.reviewers(session) if u.id != actor.id]
    for arbiter in candidates:
        if may_review(spec, arbiter) and arbiter.id not in readers:
            return assign_task(session, item, arbiter, TaskPurpose.ARBITRATION, actor=actor.username)
    record(session, actor.username, "review_arbitration_unassigned", "project_item", item.id)
    return None


def set_final_label(
    session: Session,
    item_id: int,
    source: FinalSource,
    actor: User,
    *,
    annotation_version_id: int | None = None,
    consensus_id: int | None = None,
) -> FinalLabel:
    """Make this the item's one current final label (replacing any earlier one, e.g. after arbitration).

    Ground truth wins: once outcomes were imported for the item, a later consensus or arbitration updates
    the segmentation the final label points at but the source stays ground truth."""
    row = repository.final_label(session, item_id)
    keep_ground_truth = row is not None and row.source == FinalSource.GROUND_TRUTH.value
    row = _upsert_final_label(session, item_id, row,
                              source=FinalSource.GROUND_TRUTH.value if keep_ground_truth else source.value,
                              annotation_version_id=annotation_version_id, consensus_id=consensus_id)
    record(session, actor.username, "final_label_set", "project_item", item_id, source=row.source,
           requested_source=source.value, annotation_version_id=annotation_version_id, consensus_id=consensus_id)
    return row


def _upsert_final_label(session: Session, item_id: int, row: FinalLabel | None, **fields: Any) -> FinalLabel:
    """Create the item's final label row, or update the given one in place (one current row per item)."""
    if row is None:
        return repository.add_final_label(session, FinalLabel(item_id=item_id, updated_at=utcnow(), **fields))
    for name, value in fields.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return row


def set_ground_truth_final(session: Session, item_id: int, import_id: int, actor: User) -> FinalLabel:
    """Imported outcomes override the item's label: the source becomes ground truth (the segmentation the
    final label pointed at, if any, stays referenced)."""
    row = _upsert_final_label(session, item_id, repository.final_label(session, item_id),
                              source=FinalSource.GROUND_TRUTH.value, ground_truth_import_id=import_id)
    record(session, actor.username, "final_label_set", "project_item", item_id, source=row.source,
           ground_truth_import_id=import_id)
    return row


# --- arbitration --------------------------------------------------------------------------------------------


def finish_arbitration(session: Session, task: Task, actor: User) -> FinalLabel:
    """The arbiter submits: their latest SEG becomes the item's final label (source arbitration, keeping
    the consensus it settled as provenance) and the arbitration task is done. Without a SEG: 409, nothing
    changes."""
    if task.purpose != TaskPurpose.ARBITRATION.value:
        raise Conflict(f"task {task.id} is a {task.purpose} task, not an arbitration")
    version = repository.latest_seg(session, task.id)
    if version is None:
        raise Conflict(f"arbitration task {task.id} has no segmentation: save the arbitrated SEG before submitting")
    results = repository.consensus_results(session, task.item_id)
    submit_task(session, task, actor)  # an arbitration is not reviewed: submitted -> done at once
    row = set_final_label(
        session,
        task.item_id,
        FinalSource.ARBITRATION,
        actor,
        annotation_version_id=version.id,
        consensus_id=results[-1].id if results else None,
    )
    record(
        session,
        actor.username,
        "review_arbitration_done",
        "task",
        task.id,
        item_id=task.item_id,
        annotation_version_id=version.id,
    )
    return row
