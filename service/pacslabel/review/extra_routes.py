"""JSON API around review that is not under /api/review: a task's comment thread and the fixes reviewers made
to it, an item's final label with provenance, ground truth import and the admin's accession lookup.

404 for an unknown task / item / project, 403 for someone who does not take part, 400 with line numbers for a
bad outcomes file.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from pacslabel.audit.service import record
from pacslabel.deid.pseudonyms import Pseudonymizer
from pacslabel.errors import BadInput, Forbidden, NotFound
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects import repository as project_repository
from pacslabel.projects import service as project_service
from pacslabel.projects.models import ProjectItem
from pacslabel.review import comments, fix_changes, ground_truth, provenance
from pacslabel.review.comments import MAX_COMMENT_LENGTH
from pacslabel.settings import Settings
from pacslabel.tasks.models import Task
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import INVALID_REQUEST, RowId, Slug, Text
from pacslabel.web.deps import AdminUser, AppSettings, CurrentUser, DbSession, require_roles

router = APIRouter(tags=["review"], responses=INVALID_REQUEST)

MAX_LOOKUP = 1000
ReviewerUser = Annotated[User, Depends(require_roles(Role.REVIEWER, Role.ADMIN))]


class CommentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: Text = Field(min_length=1, max_length=MAX_COMMENT_LENGTH)


class AccessionLookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accessions: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=MAX_LOOKUP)


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The de-identification's pseudonyms under the settings' key (the key the ingest used)."""
    return Pseudonymizer(settings.secret("pseudonym_key").encode())


# --- a task's thread and fixes --------------------------------------------------------------------------------


@router.get("/api/tasks/{task_id}/comments")
def list_comments(task_id: RowId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = comments.followed_task(session, task_id, user)
    return {"task_id": task.id, "comments": comments.thread(session, task)}


@router.post("/api/tasks/{task_id}/comments", status_code=201)
def add_comment(task_id: RowId, body: CommentRequest, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    task = comments.followed_task(session, task_id, user)
    row = comments.post_comment(session, task, user, body.body)
    return {"comment": comments.comment_view(row, user.username)}


@router.get("/api/tasks/{task_id}/changes")
def task_changes(task_id: RowId, request: Request, session: DbSession,
                 user: CurrentUser) -> dict[str, Any]:
    """What reviewers changed in this read: per fix, per label added/removed voxels, Dice, slices touched."""
    task: Task = comments.followed_task(session, task_id, user)
    orthanc: OrthancClient | None = getattr(request.app.state, "orthanc", None)
    return {"task_id": task.id, "fixes": fix_changes.fixes_of_task(session, orthanc, task)}


# --- final label ----------------------------------------------------------------------------------------------


@router.get("/api/items/{item_id}/final-label")
def final_label(item_id: RowId, session: DbSession, user: ReviewerUser) -> dict[str, Any]:
    item = session.get(ProjectItem, item_id)
    if item is None:
        raise NotFound(f"no item {item_id}")
    if user.role != Role.ADMIN.value:
        project = project_repository.get_project(session, item.project_id)
        if project is None or not project_service.may_review(project_service.project_spec(project), user):
            raise Forbidden(f"{user.username} is not a reviewer of item {item_id}'s project")
    result = provenance.final_label_provenance(session, item_id)
    if result is None:
        raise NotFound(f"item {item_id} has no final label yet")
    return result


# --- ground truth ---------------------------------------------------------------------------------------------


async def _upload(request: Request) -> tuple[bytes, str]:
    """The outcomes file: multipart (field "file") or the raw body (text/csv); the name from the upload, the
    file_name query parameter, or "upload.csv"."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    name = request.query_params.get("file_name") or "upload.csv"
    if media == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput('send the outcomes CSV as the multipart field "file"')
        data = await upload.read(ground_truth.MAX_FILE_BYTES + 1)
        return data, upload.filename or name
    return await request.body(), name


@router.post("/api/projects/{slug}/ground-truth")
async def import_ground_truth(
    slug: Slug, request: Request, session: DbSession, admin: AdminUser, settings: AppSettings
) -> dict[str, Any]:
    data, name = await _upload(request)
    project = project_service.require_project(session, slug)
    result = ground_truth.import_outcomes(session, project, data, name, admin, pseudonymizer(settings))
    return {
        "import_id": result.import_id,
        "file_name": result.file_name,
        "rows": result.rows,
        "answers": result.answers,
        "items": result.item_ids,
    }


@router.post("/api/admin/accession-lookup")
def accession_lookup(
    body: AccessionLookupRequest, session: DbSession, admin: AdminUser, settings: AppSettings
) -> dict[str, Any]:
    """Original accession numbers -> the pseudonymous patient and study they became. Admins only; audited
    with the count and the keyed values, never the originals."""
    keyed = pseudonymizer(settings)
    found = ground_truth.studies_by_accession(session, keyed, body.accessions)
    patients = ground_truth.patient_pseudonyms(session, {s.patient_id for studies in found.values() for s in studies})
    results = []
    for accession in body.accessions:
        studies = found.get(accession, [])
        results.append(
            {
                "accession": accession,
                "found": bool(studies),
                "studies": [
                    {"study_instance_uid": s.study_instance_uid, "patient_pseudonym": patients.get(s.patient_id)}
                    for s in studies
                ],
            }
        )
    record(
        session,
        admin.username,
        "accession_lookup",
        "catalog",
        None,
        count=len(body.accessions),
        found=sum(1 for r in results if r["found"]),
        accession_keys=[ground_truth.accession_key(keyed, a) for a in body.accessions][:100],
    )
    return {"results": results}
