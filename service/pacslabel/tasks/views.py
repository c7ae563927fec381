"""What the API shows of a task. Readers see a repeat as an ordinary read (intra-rater repeats are
unannounced) and nothing about slots, splits or other readers; admins see everything."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pacslabel.projects import repository as project_repository
from pacslabel.projects.clinical import reader_context
from pacslabel.tasks import repository
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose
from pacslabel.users.models import Role, User


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def shown_purpose(task: Task, viewer: User) -> str:
    if task.purpose == TaskPurpose.REPEAT.value and viewer.role != Role.ADMIN.value:
        return TaskPurpose.READ.value
    return task.purpose


def task_view(session: Session, task: Task, viewer: User, *, with_context: bool = False) -> dict[str, Any]:
    project = project_repository.get_project(session, task.project_id)
    item = project_repository.get_item(session, task.item_id)
    assert project is not None and item is not None
    view: dict[str, Any] = {
        "id": task.id,
        "project": project.slug,
        "purpose": shown_purpose(task, viewer),
        "status": task.status,
        "item_id": item.id,
        "study_instance_uid": repository.study_uid(session, item.study_id),
        "series_instance_uids": list(item.series_uids),
        "protocol_version": task.protocol_version,
        "claimed_at": _iso(task.claimed_at),
        "submitted_at": _iso(task.submitted_at),
        "note": task.note,
        "skip_reason": task.skip_reason,
        "exclusion_reason": task.exclusion_reason,
    }
    if viewer.role == Role.ADMIN.value:
        reader = session.get(User, task.reader_id)
        view.update({"reader": reader.username if reader else None, "slot": task.slot, "split": item.split,
                     "stage": item.stage, "assigned_by": task.assigned_by, "due_after_reads": task.due_after_reads,
                     "created_at": _iso(task.created_at), "finished_at": _iso(task.finished_at)})
    if with_context:
        view["context"] = reader_context(session, project, item)
    return view


def visible_to_reader(task: Task) -> bool:
    # A repeat waiting for its turn would announce itself in "my tasks".
    return not (task.purpose == TaskPurpose.REPEAT.value and task.status == "open")
