"""Task queries. Candidate queries lock the chosen item rows with FOR NO KEY UPDATE SKIP LOCKED on PostgreSQL
(concurrent "Next" presses look at different items; NO KEY so that inserting a task, which takes a KEY SHARE
lock on its item, is not blocked); SQLite serializes claimers with BEGIN IMMEDIATE instead."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, case, exists, func, select
from sqlalchemy.orm import Session

from pacslabel.catalog.models import CatalogStudy
from pacslabel.projects.models import ProjectItem
from pacslabel.projects.schema import ProjectSpec
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import READ_COMPLETE, TaskPurpose, TaskStatus

CANDIDATE_BATCH = 16
_STAGE_ORDER = case((ProjectItem.stage == "calibration", 0), (ProjectItem.stage == "first_batch", 1), else_=2)


def get_task(session: Session, task_id: int) -> Task | None:
    return session.get(Task, task_id)


def needed_reads(spec: ProjectSpec) -> ColumnElement[int]:
    per_split = spec.readers_per_split
    return case((ProjectItem.split == "train", per_split.train),
                (ProjectItem.split == "validation", per_split.validation), else_=per_split.test)


def _slot_reads(purpose: TaskPurpose = TaskPurpose.READ) -> ColumnElement[int]:
    return (select(func.count(Task.id))
            .where(Task.item_id == ProjectItem.id, Task.purpose == purpose.value, Task.slot.is_not(None))
            .scalar_subquery())


def _touched_by(reader_id: int) -> ColumnElement[bool]:
    # Any task of this reader on the item (read, repeat, review, arbitration): blinding and independence.
    return exists().where(Task.item_id == ProjectItem.id, Task.reader_id == reader_id)


def unfinished_tasks(session: Session, reader_id: int, project_ids: Sequence[int]) -> list[Task]:
    return list(session.scalars(
        select(Task).where(Task.reader_id == reader_id, Task.project_id.in_(project_ids),
                           Task.status.in_([TaskStatus.IN_PROGRESS, TaskStatus.RETURNED]))
        .order_by(case((Task.status == TaskStatus.IN_PROGRESS, 0), else_=1), Task.id)))


def open_tasks(session: Session, reader_id: int, project_ids: Sequence[int]) -> list[Task]:
    return list(session.scalars(
        select(Task).where(Task.reader_id == reader_id, Task.project_id.in_(project_ids),
                           Task.status == TaskStatus.OPEN)
        .order_by(Task.id)))


def completed_reads(session: Session, reader_id: int, project_id: int) -> int:
    """Tasks this reader has submitted in the project (the clock for repeat gaps)."""
    return int(session.scalar(select(func.count(Task.id))
                              .where(Task.reader_id == reader_id, Task.project_id == project_id,
                                     Task.submitted_at.is_not(None))) or 0)


def _locked(query: Select[tuple[ProjectItem]], skip_locked: bool) -> Select[tuple[ProjectItem]]:
    # Without skip_locked: no row lock at all (a last look past rows other claimers hold; the constraints
    # still decide who gets a slot).
    return query.with_for_update(skip_locked=True, key_share=True) if skip_locked else query


def calibration_candidates(session: Session, project_id: int, reader_id: int, *,
                           skip_locked: bool = True) -> list[ProjectItem]:
    return list(session.scalars(_locked(
        select(ProjectItem)
        .where(ProjectItem.project_id == project_id, ProjectItem.stage == "calibration",
               ProjectItem.released_at.is_not(None), ~_touched_by(reader_id))
        .order_by(ProjectItem.order_key).limit(CANDIDATE_BATCH), skip_locked)))


def read_candidates(session: Session, project_id: int, reader_id: int, spec: ProjectSpec, *,
                    skip_locked: bool = True) -> list[ProjectItem]:
    """Released items with a free reading slot that this reader has not touched; items already started first
    (finish items before opening new ones), then release stage, then keyed order."""
    filled = _slot_reads()
    return list(session.scalars(_locked(
        select(ProjectItem)
        .where(ProjectItem.project_id == project_id, ProjectItem.stage != "calibration",
               ProjectItem.released_at.is_not(None), filled < needed_reads(spec), ~_touched_by(reader_id))
        .order_by(_STAGE_ORDER, filled.desc(), ProjectItem.order_key).limit(CANDIDATE_BATCH), skip_locked)))


def review_candidates(session: Session, project_id: int, reader_id: int, spec: ProjectSpec, *,
                      skip_locked: bool = True) -> list[ProjectItem]:
    """Items that need review whose reading slots are all complete, with no review yet, not read by this
    reviewer."""
    complete = (select(func.count(Task.id))
                .where(Task.item_id == ProjectItem.id, Task.purpose == TaskPurpose.READ.value,
                       Task.slot.is_not(None), Task.status.in_(READ_COMPLETE))
                .scalar_subquery())
    reviewed = exists().where(Task.item_id == ProjectItem.id, Task.purpose == TaskPurpose.REVIEW.value,
                              Task.slot.is_not(None))
    return list(session.scalars(_locked(
        select(ProjectItem)
        .where(ProjectItem.project_id == project_id, ProjectItem.stage != "calibration",
               ProjectItem.needs_review.is_(True), ProjectItem.released_at.is_not(None),
               complete >= needed_reads(spec), ~reviewed, ~_touched_by(reader_id))
        .order_by(ProjectItem.order_key).limit(CANDIDATE_BATCH), skip_locked)))


def used_slots(session: Session, item_id: int, purpose: TaskPurpose) -> set[int]:
    return {int(s) for s in session.scalars(select(Task.slot).where(Task.item_id == item_id,
                                                                    Task.purpose == purpose.value,
                                                                    Task.slot.is_not(None)))}


def lock_item(session: Session, item_id: int) -> ProjectItem | None:
    return session.scalar(select(ProjectItem).where(ProjectItem.id == item_id)
                          .with_for_update(key_share=True))


def reader_task_on_item(session: Session, item_id: int, reader_id: int, purpose: TaskPurpose) -> Task | None:
    return session.scalar(select(Task).where(Task.item_id == item_id, Task.reader_id == reader_id,
                                             Task.purpose == purpose.value))


def tasks_of_reader(session: Session, reader_id: int, *, project_id: int | None = None,
                    limit: int = 500) -> list[Task]:
    query = select(Task).where(Task.reader_id == reader_id).order_by(Task.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    return list(session.scalars(query))


def study_uid(session: Session, study_id: int) -> str | None:
    return session.scalar(select(CatalogStudy.study_instance_uid).where(CatalogStudy.id == study_id))


def tasks_of_item(session: Session, item_id: int) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.item_id == item_id).order_by(Task.id)))
