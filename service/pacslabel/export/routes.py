"""JSON API of dataset snapshots (admin and ml roles) and the data-flow log (admins).

    POST /api/projects/{project}/snapshots          create (body: {"include_test": false})
    GET  /api/projects/{project}/snapshots          list
    GET  /api/snapshots/{snapshot}                  the manifest bytes (canonical JSON)
    GET  /api/snapshots/{snapshot}/download?format=dicom-zip|nifti-zip   a streamed zip
    GET  /api/snapshots/{snapshot}/diff/{other}     added / removed / changed items from snapshot to other
    GET  /api/exports/log                           the data-flow log, newest first

``{project}`` is a project id or slug, ``{snapshot}`` a snapshot id or name (``liver@3``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import chain
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.db import session_scope
from pacslabel.errors import BadInput
from pacslabel.export import snapshots
from pacslabel.export.archives import dicom_zip, nifti_zip
from pacslabel.export.manifest import parse_manifest
from pacslabel.export.models import DataFlowAction, ExportFormat
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import Project
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import INVALID_REQUEST, Reference, bounded_reference
from pacslabel.web.deps import AdminUser, DbSession, require_roles

logger = logging.getLogger(__name__)

router = APIRouter(tags=["export"], responses=INVALID_REQUEST)

ExportUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.ML))]
ProjectFilter = Annotated[str | None, Query(min_length=1, max_length=128), AfterValidator(bounded_reference)]
DOWNLOAD_FORMATS = {ExportFormat.DICOM_ZIP.value: dicom_zip, ExportFormat.NIFTI_ZIP.value: nifti_zip}


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_test: bool = False


def _orthanc(request: Request) -> OrthancClient:
    return request.app.state.orthanc  # type: ignore[no-any-return]


def _client(request: Request) -> str:
    host = request.client.host if request.client else "-"
    return f"api {host} {request.headers.get('user-agent', '-')}"


def _project(session: Session, reference: str) -> Project:
    return snapshots.project_by_reference(session, reference)


@router.post("/api/projects/{project}/snapshots", status_code=201)
def create_snapshot(project: Reference, request: Request, session: DbSession, user: ExportUser,
                    body: SnapshotRequest | None = None) -> dict[str, Any]:
    row = snapshots.create_snapshot(session, _orthanc(request), user, _project(session, project),
                                    include_test=bool(body and body.include_test), client=_client(request))
    return snapshots.snapshot_view(row)


@router.get("/api/projects/{project}/snapshots")
def list_snapshots(project: Reference, session: DbSession, user: ExportUser) -> dict[str, Any]:
    rows = snapshots.list_snapshots(session, user, _project(session, project))
    return {"snapshots": [snapshots.snapshot_view(row) for row in rows]}


@router.get("/api/snapshots/{snapshot}")
def get_manifest(snapshot: Reference, request: Request, session: DbSession, user: ExportUser) -> Response:
    row = snapshots.snapshot_for(session, user, snapshot)
    snapshots.log_event(session, user, row, DataFlowAction.DOWNLOADED, ExportFormat.MANIFEST, len(row.manifest),
                        _client(request))
    return Response(row.manifest, media_type="application/json",
                    headers={"ETag": f'"{row.manifest_sha256}"', "X-Manifest-SHA256": row.manifest_sha256})


def _counted(chunks: Iterator[bytes], sessions: sessionmaker[Session], event_id: int) -> Iterator[bytes]:
    """Pass the zip through and record its size in the event once the last byte has been produced."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        yield chunk
    with session_scope(sessions) as session:
        snapshots.finish_download(session, event_id, total)


# A zip, not JSON: said so in the OpenAPI document (FastAPI would publish application/json).
@router.get("/api/snapshots/{snapshot}/download", response_class=StreamingResponse,
            responses={200: {"description": "The snapshot as a zip archive.",
                             "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
def download(snapshot: Reference, request: Request, session: DbSession, user: ExportUser,
             format: str = "dicom-zip") -> StreamingResponse:  # noqa: A002 - the query parameter's name
    build = DOWNLOAD_FORMATS.get(format)
    if build is None:
        raise BadInput(f"unknown download format {format[:40]!r}; use one of {', '.join(DOWNLOAD_FORMATS)}")
    row = snapshots.snapshot_for(session, user, snapshot)
    document = parse_manifest(row.manifest)
    event = snapshots.log_event(session, user, row, DataFlowAction.DOWNLOADED, ExportFormat(format), None,
                                _client(request))
    event_id, name, manifest = event.id, row.name, row.manifest
    chunks = build(_orthanc(request), document, manifest)
    # The first object is fetched before the answer starts, so that Orthanc being down or an object being gone
    # or changed is an HTTP status (and no log row), not a zip cut short.
    head = [next(chunks, b""), next(chunks, b"")]
    # The log row is committed before the first byte goes out, and the session holds no transaction while
    # the (long) stream runs: on SQLite an open transaction would block every other writer.
    session.commit()
    return StreamingResponse(_counted(chain(head, chunks), request.app.state.sessionmaker, event_id),
                             media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}-{format}.zip"',
                                      "X-Manifest-SHA256": row.manifest_sha256})


@router.get("/api/snapshots/{snapshot}/diff/{other}")
def diff(snapshot: Reference, other: Reference, session: DbSession, user: ExportUser) -> dict[str, Any]:
    return snapshots.diff_snapshots(session, user, snapshot, other)


@router.get("/api/exports/log")
def data_flow_log(session: DbSession, admin: AdminUser, project: ProjectFilter = None,
                  limit: int = 200) -> dict[str, Any]:
    project_id = _project(session, project).id if project is not None else None
    entries = snapshots.data_flow_log(session, admin, project_id=project_id, limit=limit)
    return {"events": [entry.__dict__ for entry in entries]}
