"""JSON API of review: the queue of submitted reads and approve / reject (reviewers and admins only).

404 for an unknown task, 403 for annotators, 400 with the allowed list for a reason not in the protocol.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from pacslabel.errors import NotFound
from pacslabel.orthanc.client import OrthancClient
from pacslabel.review import repository, workflow
from pacslabel.review.models import ReviewDecision
from pacslabel.review.queue import reviewable_projects
from pacslabel.tasks import repository as task_repository
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import INVALID_REQUEST, RowId, Text
from pacslabel.web.deps import DbSession, require_roles

router = APIRouter(prefix="/api/review", tags=["review"], responses=INVALID_REQUEST)

ReviewerUser = Annotated[User, Depends(require_roles(Role.REVIEWER, Role.ADMIN))]


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=255)
    comment: Text | None = Field(default=None, max_length=4000)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _read_task(session: DbSession, task_id: int) -> Task:
    task = task_repository.get_task(session, task_id)
    if task is None or task.purpose != TaskPurpose.READ.value:
        raise NotFound(f"no read task {task_id}")
    return task


def _decision_view(row: ReviewDecision, task: Task) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.task_id,
        "decision": row.decision,
        "reason": row.reason,
        "comment": row.comment,
        "annotation_version_id": row.annotation_version_id,
        "task_status": task.status,
        "created_at": _iso(row.created_at),
    }


@router.get("/queue")
def queue(session: DbSession, user: ReviewerUser) -> dict[str, Any]:
    projects = reviewable_projects(session, user)  # the same rule as the review queue page
    slugs = {p.id: p.slug for p in projects}
    entries = []
    for task in repository.submitted_reads(session, list(slugs), user.id):
        version = repository.latest_seg(session, task.id)
        entries.append(
            {
                "task_id": task.id,
                "project": slugs[task.project_id],
                "item_id": task.item_id,
                "submitted_at": _iso(task.submitted_at),
                "note": task.note,
                "exclusion_reason": task.exclusion_reason,
                "seg_sop_instance_uid": version.sop_instance_uid if version else None,
                "seg_version": version.version if version else None,
            }
        )
    return {"reads": entries}


@router.post("/tasks/{read_task_id}/approve")
def approve(read_task_id: RowId, request: Request, session: DbSession,
            user: ReviewerUser) -> dict[str, Any]:
    task = _read_task(session, read_task_id)
    review_task = repository.task_of_reviewer(session, task.item_id, user.id, TaskPurpose.REVIEW)
    orthanc: OrthancClient | None = getattr(request.app.state, "orthanc", None)
    row = workflow.approve(session, review_task, user, task, orthanc=orthanc)
    return _decision_view(row, task)


@router.post("/tasks/{read_task_id}/reject")
def reject(read_task_id: RowId, body: RejectRequest, session: DbSession,
           user: ReviewerUser) -> dict[str, Any]:
    task = _read_task(session, read_task_id)
    review_task = repository.task_of_reviewer(session, task.item_id, user.id, TaskPurpose.REVIEW)
    row = workflow.reject(session, review_task, user, task, body.reason, body.comment)
    return _decision_view(row, task)
