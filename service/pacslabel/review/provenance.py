"""The final label of an item with its provenance: every annotation version it came from (the reads, the
reviewers' fixes and the readers' earlier versions they replaced, the consensus inputs, the arbitration
result), the review decisions on those reads, the consensus row and the ground truth rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.review import repository
from pacslabel.review.ground_truth import ground_truth_rows
from pacslabel.review.models import ConsensusResult, ReviewDecision
from pacslabel.tasks.models import Task
from pacslabel.users.models import User


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _version_chain(session: Session, start: list[int]) -> list[AnnotationVersion]:
    """The given versions and, transitively, every predecessor (each once, oldest id first)."""
    seen: dict[int, AnnotationVersion] = {}
    todo = [v for v in start if v is not None]
    while todo:
        rows = session.scalars(select(AnnotationVersion).where(AnnotationVersion.id.in_(set(todo) - set(seen))))
        todo = []
        for row in rows:
            seen[row.id] = row
            if row.predecessor_id is not None and row.predecessor_id not in seen:
                todo.append(row.predecessor_id)
    return [seen[k] for k in sorted(seen)]


def _consensus_view(row: ConsensusResult) -> dict[str, Any]:
    return {
        "id": row.id,
        "method": row.method,
        "inputs": list(row.inputs),
        "mean_dice": row.mean_dice,
        "min_dice": row.min_dice,
        "pairs": row.pairs,
        "reader_agreement": row.reader_agreement,
        "reader_weights": row.reader_weights,
        "comparison": row.comparison,
        "sop_instance_uid": row.sop_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "created_at": _iso(row.created_at),
    }


def final_label_provenance(session: Session, item_id: int) -> dict[str, Any] | None:
    """The item's current final label and everything it came from; None when it has none yet."""
    final = repository.final_label(session, item_id)
    if final is None:
        return None
    consensus = session.get(ConsensusResult, final.consensus_id) if final.consensus_id else None
    start = [final.annotation_version_id] if final.annotation_version_id else []
    if consensus is not None:
        start += [int(v) for v in consensus.inputs]
    chain = _version_chain(session, [v for v in start if v is not None])
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_({v.task_id for v in chain} or {-1})))}
    user_ids = {v.author_id for v in chain} | {t.reader_id for t in tasks.values()}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(user_ids or {-1}))).tuples().all())
    inputs = {int(v) for v in consensus.inputs} if consensus else set()
    versions = []
    for version in chain:
        task = tasks[version.task_id]
        if version.id == final.annotation_version_id:
            role = "final"
        elif version.id in inputs:
            role = "consensus_input"
        else:
            role = "earlier_version"
        versions.append(
            {
                "id": version.id,
                "role": role,
                "task_id": version.task_id,
                "task_purpose": task.purpose,
                "reader": names.get(task.reader_id),
                "version": version.version,
                "modality": version.modality,
                "author": names.get(version.author_id),
                "author_role": version.author_role,
                "is_fix": version.author_id != task.reader_id,
                "predecessor_id": version.predecessor_id,
                "study_instance_uid": version.study_instance_uid,
                "series_instance_uid": version.series_instance_uid,
                "sop_instance_uid": version.sop_instance_uid,
                "created_at": _iso(version.created_at),
            }
        )
    decisions = list(
        session.scalars(
            select(ReviewDecision).where(ReviewDecision.task_id.in_(set(tasks) or {-1})).order_by(ReviewDecision.id)
        )
    )
    reviewer_names = dict(
        session.execute(select(User.id, User.username).where(User.id.in_({d.reviewer_id for d in decisions} or {-1})))
        .tuples()
        .all()
    )
    return {
        "item_id": item_id,
        "source": final.source,
        "updated_at": _iso(final.updated_at),
        "annotation_version_id": final.annotation_version_id,
        "consensus_id": final.consensus_id,
        "ground_truth_import_id": final.ground_truth_import_id,
        "versions": versions,
        "consensus": _consensus_view(consensus) if consensus else None,
        "decisions": [
            {
                "id": d.id,
                "task_id": d.task_id,
                "reviewer": reviewer_names.get(d.reviewer_id),
                "decision": d.decision,
                "reason": d.reason,
                "annotation_version_id": d.annotation_version_id,
                "created_at": _iso(d.created_at),
            }
            for d in decisions
        ],
        "ground_truth": ground_truth_rows(session, item_id),
    }
