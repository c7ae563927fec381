"""Queries of the annotations room: tasks a user may save on, versions of a task, the per-task lock."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogStudy
from pacslabel.projects.models import ProjectItem, ProtocolVersion
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus

# A task takes annotations while its reader still works on it. OPEN counts (OHIF may be opened from the
# worklist before "start"), except for a repeat that has not been served yet: it does not exist for its reader.
SAVABLE_STATUSES = (TaskStatus.OPEN.value, TaskStatus.IN_PROGRESS.value, TaskStatus.RETURNED.value)


def savable_tasks_for_study(session: Session, reader_id: int, study_instance_uid: str) -> list[Task]:
    """The reader's tasks that may take an annotation of this study, the one being worked on first.

    The study is matched through the catalog, so items of unit "series" (unit_uid = a series UID) match too.
    """
    query = (
        select(Task)
        .join(ProjectItem, ProjectItem.id == Task.item_id)
        .join(CatalogStudy, CatalogStudy.id == ProjectItem.study_id)
        .where(
            Task.reader_id == reader_id,
            CatalogStudy.study_instance_uid == study_instance_uid,
            Task.status.in_(SAVABLE_STATUSES),
        )
        .order_by(Task.id.desc())
    )
    tasks = [
        task for task in session.scalars(query)
        if not (task.purpose == TaskPurpose.REPEAT.value and task.status == TaskStatus.OPEN.value)
    ]
    # In progress / returned before merely open: that is the task the reader has in front of them.
    return sorted(tasks, key=lambda task: task.status == TaskStatus.OPEN.value)


def item_of(session: Session, task: Task) -> ProjectItem:
    item = session.get(ProjectItem, task.item_id)
    assert item is not None  # tasks.item_id is a foreign key
    return item


def study_uid_of(session: Session, item: ProjectItem) -> str:
    study = session.get(CatalogStudy, item.study_id)
    assert study is not None  # project_items.study_id is a foreign key
    return study.study_instance_uid


def protocol_of(session: Session, task: Task) -> dict | None:  # type: ignore[type-arg]
    """The protocol (JSON) the task is read under; None if that version is missing."""
    return session.scalar(
        select(ProtocolVersion.protocol).where(
            ProtocolVersion.project_id == task.project_id, ProtocolVersion.version == task.protocol_version
        )
    )


def lock_task(session: Session, task_id: int) -> None:
    """Serialise saves of one task: a row lock on PostgreSQL. (SQLite: the caller holds BEGIN IMMEDIATE.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id})


def latest_version(session: Session, task_id: int, modality: str) -> AnnotationVersion | None:
    return session.scalar(
        select(AnnotationVersion)
        .where(AnnotationVersion.task_id == task_id, AnnotationVersion.modality == modality)
        .order_by(AnnotationVersion.version.desc())
        .limit(1)
    )


def version_count(session: Session, task_id: int) -> int:
    return int(session.scalar(select(func.count()).where(AnnotationVersion.task_id == task_id)) or 0)


def versions_in_series(session: Session, study_instance_uid: str, series_instance_uid: str) -> int:
    """How many versions are stored in a task's SEG or SR series (each is one instance in Orthanc)."""
    return int(session.scalar(select(func.count()).where(
        AnnotationVersion.study_instance_uid == study_instance_uid,
        AnnotationVersion.series_instance_uid == series_instance_uid)) or 0)


def versions_of_task(session: Session, task_id: int, modality: str | None = None) -> Sequence[AnnotationVersion]:
    query = select(AnnotationVersion).where(AnnotationVersion.task_id == task_id)
    if modality is not None:
        query = query.where(AnnotationVersion.modality == modality)
    return session.scalars(query.order_by(AnnotationVersion.modality, AnnotationVersion.version)).all()


def version_by_sop_instance_uid(session: Session, sop_instance_uid: str) -> AnnotationVersion | None:
    return session.scalar(select(AnnotationVersion).where(AnnotationVersion.sop_instance_uid == sop_instance_uid))


def add_version(session: Session, version: AnnotationVersion) -> AnnotationVersion:
    session.add(version)
    session.flush()
    return version
