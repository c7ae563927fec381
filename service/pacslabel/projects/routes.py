"""JSON API of projects: list, detail (protocol and instructions), and for admins apply / sync / clinical
import. Project files and CSVs are posted as the raw text body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pacslabel.errors import BadInput, Forbidden
from pacslabel.projects import repository, service
from pacslabel.projects.clinical import import_clinical_csv
from pacslabel.projects.yaml_loading import ProjectFileError
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import INVALID_REQUEST, Slug
from pacslabel.web.deps import AdminUser, CurrentUser, DbSession

router = APIRouter(prefix="/api/projects", tags=["projects"], responses=INVALID_REQUEST)

MAX_BODY_BYTES = 5 * 1024 * 1024


async def text_body(request: Request) -> str:
    """The raw request body as UTF-8 text (a project file or a CSV)."""
    data = await request.body()
    if len(data) > MAX_BODY_BYTES:
        raise BadInput(f"body larger than {MAX_BODY_BYTES} bytes", status_code=413)
    if not data.strip():
        raise BadInput("empty body; send the file as the request body")
    if b"\x00" in data:  # no YAML or CSV holds one, and PostgreSQL text cannot
        raise BadInput("the body contains NUL (0x00) bytes; send the file as UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the body is not UTF-8 text") from None


TextBody = Annotated[str, Depends(text_body)]


def _visible(user: User, project: Any) -> bool:
    if user.role == Role.ADMIN.value:
        return True
    spec = service.project_spec(project)
    return project.active and (service.may_read(spec, user) or service.may_review(spec, user))


@router.get("")
def list_projects(session: DbSession, user: CurrentUser) -> dict[str, Any]:
    projects = [p for p in repository.list_projects(session) if _visible(user, p)]
    if user.role == Role.ADMIN.value:
        return {"projects": [service.project_summary(session, p) for p in projects]}
    return {"projects": [{"slug": p.slug, "name": p.name, "protocol_version": p.protocol_version}
                         for p in projects]}


@router.get("/{slug}")
def project_detail(slug: Slug, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    project = service.require_project(session, slug)
    if not _visible(user, project):
        raise Forbidden(f"you are not a reader of project {slug}")
    spec = service.project_spec(project)
    detail: dict[str, Any] = {
        "slug": project.slug, "name": project.name, "description": spec.description,
        "protocol_version": project.protocol_version, "instructions": spec.protocol.instructions,
        "protocol": spec.protocol.model_dump(mode="json"),
    }
    if user.role == Role.ADMIN.value:
        detail["definition"] = project.definition
        detail["summary"] = service.project_summary(session, project)
    return detail


@router.post("/apply", response_model=None)
def apply(text: TextBody, session: DbSession, admin: AdminUser) -> dict[str, Any] | JSONResponse:
    try:
        result = service.apply_project_file(session, text, admin.username)
    except ProjectFileError as exc:
        errors = [{"line": p.line, "field": p.field, "message": p.message} for p in exc.problems]
        return JSONResponse({"detail": exc.message, "errors": errors}, status_code=400)
    return {"slug": result.project.slug, "created": result.created, "changed": result.changed,
            "protocol_version": result.protocol_version, "protocol_bumped": result.protocol_bumped,
            "changed_sections": result.changed_sections}


@router.post("/{slug}/sync")
def sync(slug: Slug, session: DbSession, admin: AdminUser) -> dict[str, Any]:
    result = service.sync_project_items(session, service.require_project(session, slug))
    return {"added": result.added, "updated": result.updated, "released": result.released,
            "new_patients": result.new_patients}


@router.post("/{slug}/clinical")
def clinical(slug: Slug, text: TextBody, session: DbSession, admin: AdminUser) -> dict[str, Any]:
    result = import_clinical_csv(session, service.require_project(session, slug), text, admin.username)
    return {"rows": result.rows, "patients": result.patients}
