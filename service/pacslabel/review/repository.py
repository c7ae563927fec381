"""Review queries: the review queue, decisions, consensus rows and final labels."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationModality, AnnotationVersion
from pacslabel.projects.models import ProjectItem
from pacslabel.review.models import ConsensusResult, FinalLabel, ReviewDecision
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import Role, User


def submitted_reads(session: Session, project_ids: Sequence[int], exclude_reader_id: int) -> list[Task]:
    """Submitted reads waiting for review, oldest submission first; never the reviewer's own reads."""
    if not project_ids:
        return []
    return list(
        session.scalars(
            select(Task)
            .where(
                Task.project_id.in_(project_ids),
                Task.purpose == TaskPurpose.READ.value,
                Task.slot.is_not(None),
                Task.status == TaskStatus.SUBMITTED.value,
                Task.reader_id != exclude_reader_id,
            )
            .order_by(Task.submitted_at, Task.id)
        )
    )


def slot_reads(session: Session, item_id: int) -> list[Task]:
    """The reads that fill the item's reading slots (skipped reads give their slot up, so are not here)."""
    return list(
        session.scalars(
            select(Task)
            .where(Task.item_id == item_id, Task.purpose == TaskPurpose.READ.value, Task.slot.is_not(None))
            .order_by(Task.slot)
        )
    )


def task_of_reviewer(session: Session, item_id: int, reviewer_id: int, purpose: TaskPurpose) -> Task | None:
    return session.scalar(
        select(Task).where(Task.item_id == item_id, Task.reader_id == reviewer_id, Task.purpose == purpose.value)
    )


def item_task(session: Session, item_id: int, purpose: TaskPurpose) -> Task | None:
    return session.scalar(
        select(Task).where(Task.item_id == item_id, Task.purpose == purpose.value).order_by(Task.id).limit(1)
    )


def latest_seg(session: Session, task_id: int) -> AnnotationVersion | None:
    return session.scalar(
        select(AnnotationVersion)
        .where(AnnotationVersion.task_id == task_id, AnnotationVersion.modality == AnnotationModality.SEG.value)
        .order_by(AnnotationVersion.version.desc())
        .limit(1)
    )


def add_decision(session: Session, decision: ReviewDecision) -> ReviewDecision:
    session.add(decision)
    session.flush()
    return decision


def decisions_of_task(session: Session, task_id: int) -> list[ReviewDecision]:
    return list(
        session.scalars(select(ReviewDecision).where(ReviewDecision.task_id == task_id).order_by(ReviewDecision.id))
    )


def consensus_for_inputs(session: Session, item_id: int, inputs: list[int]) -> ConsensusResult | None:
    # JSON columns do not compare portably across SQLite/PostgreSQL: compare in Python (few rows per item).
    for row in session.scalars(select(ConsensusResult).where(ConsensusResult.item_id == item_id)):
        if list(row.inputs) == inputs:
            return row
    return None


def consensus_results(session: Session, item_id: int) -> list[ConsensusResult]:
    return list(
        session.scalars(select(ConsensusResult).where(ConsensusResult.item_id == item_id).order_by(ConsensusResult.id))
    )


def add_consensus(session: Session, row: ConsensusResult) -> ConsensusResult:
    session.add(row)
    session.flush()
    return row


def final_label(session: Session, item_id: int) -> FinalLabel | None:
    return session.scalar(select(FinalLabel).where(FinalLabel.item_id == item_id))


def add_final_label(session: Session, row: FinalLabel) -> FinalLabel:
    session.add(row)
    session.flush()
    return row


def lock_item(session: Session, item_id: int) -> ProjectItem | None:
    # Serializes consensus/arbitration per item (two approvals finishing at once compute it once).
    return session.scalar(select(ProjectItem).where(ProjectItem.id == item_id).with_for_update(key_share=True))


def reviewers(session: Session) -> list[User]:
    """Active reviewers, oldest account first (a stable choice for arbitration)."""
    return list(
        session.scalars(select(User).where(User.role == Role.REVIEWER.value, User.active.is_(True)).order_by(User.id))
    )
