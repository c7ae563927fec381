"""JSON API of reading tasks: Next, my tasks, submit / skip / exclude / note, and admin assignment.

A reader acts only on their own tasks (403 for another reader's, 404 for none); a repeat looks like a read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pacslabel.errors import NotFound
from pacslabel.projects import service as project_service
from pacslabel.tasks import repository, service
from pacslabel.tasks.states import TaskPurpose
from pacslabel.tasks.views import task_view, visible_to_reader
from pacslabel.users import repository as user_repository
from pacslabel.web.api_contract import INVALID_REQUEST, MAX_ROW_ID, RowId, Text
from pacslabel.web.deps import AdminUser, CurrentUser, DbSession

router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=INVALID_REQUEST)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NextRequest(Body):
    project: Text | None = None


class ReasonRequest(Body):
    reason: Text = Field(min_length=1, max_length=255)


class ExcludeRequest(ReasonRequest):
    note: Text | None = Field(default=None, max_length=service.MAX_NOTE_LENGTH)


class NoteRequest(Body):
    text: Text = Field(min_length=1, max_length=service.MAX_NOTE_LENGTH)


class AssignRequest(Body):
    project: Text = Field(min_length=1)
    item_id: int = Field(ge=1, le=MAX_ROW_ID)
    reader: Text = Field(min_length=1)
    purpose: TaskPurpose = TaskPurpose.READ


@router.post("/next")
def next_task(session: DbSession, user: CurrentUser, body: NextRequest | None = None) -> dict[str, Any]:
    task = service.claim_next_task(session, user, body.project if body else None)
    return {"task": task_view(session, task, user, with_context=True) if task else None}


@router.get("/mine")
def my_tasks(session: DbSession, user: CurrentUser,
             project: Annotated[Text | None, Query(max_length=64)] = None) -> dict[str, Any]:
    project_id = project_service.require_project(session, project).id if project else None
    tasks = [t for t in repository.tasks_of_reader(session, user.id, project_id=project_id) if visible_to_reader(t)]
    return {"tasks": [task_view(session, t, user) for t in tasks]}


@router.get("/{task_id}")
def get_task(task_id: RowId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = service.task_for_user(session, task_id, user)
    return task_view(session, task, user, with_context=True)


@router.post("/{task_id}/start")
def start(task_id: RowId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Take up an open task assigned to you (e.g. an arbitration); 409 when it is not open."""
    task = service.start_task(session, service.task_for_user(session, task_id, user, act=True), user)
    return task_view(session, task, user)


@router.post("/{task_id}/submit")
def submit(task_id: RowId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = service.task_for_user(session, task_id, user, act=True)
    if task.purpose == TaskPurpose.ARBITRATION.value:
        # The arbiter's SEG becomes the item's final label (review room; imported here to keep tasks below it).
        from pacslabel.review.workflow import finish_arbitration

        finish_arbitration(session, task, user)
    else:
        task = service.submit_task(session, task, user)
    return task_view(session, task, user)


@router.post("/{task_id}/skip")
def skip(task_id: RowId, body: ReasonRequest, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = service.skip_task(session, service.task_for_user(session, task_id, user, act=True), user, body.reason)
    return task_view(session, task, user)


@router.post("/{task_id}/exclude")
def exclude(task_id: RowId, body: ExcludeRequest, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = service.exclude_task(session, service.task_for_user(session, task_id, user, act=True), user,
                                body.reason, body.note)
    return task_view(session, task, user)


@router.post("/{task_id}/note")
def note(task_id: RowId, body: NoteRequest, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = service.leave_note(session, service.task_for_user(session, task_id, user, act=True), user, body.text)
    return task_view(session, task, user)


@router.post("/assign")
def assign(body: AssignRequest, session: DbSession, admin: AdminUser) -> dict[str, Any]:
    project = project_service.require_project(session, body.project)
    item = project_service.item_by_id(session, body.item_id)
    if item.project_id != project.id:
        raise NotFound(f"no item {body.item_id} in project {project.slug}")
    reader = user_repository.get_user_by_name(session, body.reader)
    if reader is None:
        raise NotFound(f"no user {body.reader!r}")
    task = service.assign_task(session, item, reader, body.purpose, actor=admin.username)
    return task_view(session, task, admin)
