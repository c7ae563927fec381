"""Dataset snapshots: creating them, who may see which, verifying, comparing, and the data-flow log.

Who: admins and the ML role. The test split goes into a snapshot only when asked for and only for a user who
``may_see_test_split``; a snapshot that holds the test split is invisible (404, left out of lists) to users
who may not see it, like the test split at every other door. Every creation and download is a
:class:`DataFlowEvent` and an audit event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput, Forbidden, NotFound
from pacslabel.export import repository
from pacslabel.export.diff import diff_manifests
from pacslabel.export.manifest import (
    SnapshotHeader,
    build_manifest,
    collect_release,
    manifest_bytes,
    parse_manifest,
    sha256_hex,
    store_new_hashes,
)
from pacslabel.export.models import DataFlowAction, DataFlowEvent, ExportFormat, Snapshot
from pacslabel.export.released import may_see_test_split
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import row_id

logger = logging.getLogger(__name__)

EXPORT_ROLES = frozenset({Role.ADMIN.value, Role.ML.value})
MAX_CLIENT_LENGTH = 128
MAX_ECHO = 100  # how much of a caller's reference an error message repeats


def check_export_role(user: User) -> None:
    if user.role not in EXPORT_ROLES:
        raise Forbidden("dataset snapshots are for the admin and ml roles")


def require_project(session: Session, project_id: int) -> Project:
    project = project_repository.get_project(session, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    return project


def project_by_reference(session: Session, reference: str) -> Project:
    """A project by slug or numeric id (CLI arguments)."""
    project = project_repository.get_project_by_slug(session, reference)
    if project is None and (number := row_id(reference)) is not None:
        project = project_repository.get_project(session, number)
    if project is None:
        raise NotFound(f"no project {reference[:MAX_ECHO]!r}")
    return project


def may_see_snapshot(session: Session, user: User, snapshot: Snapshot) -> bool:
    if user.role not in EXPORT_ROLES:
        return False
    return not snapshot.include_test or may_see_test_split(session, user, snapshot.project_id)


def snapshot_for(session: Session, user: User, reference: str | int) -> Snapshot:
    """The snapshot by id or name (``prostate-mri@3``) if ``user`` may see it; 404 otherwise (a snapshot of
    the test split is not revealed to a user without test access)."""
    check_export_role(user)
    text = str(reference).strip()[:MAX_ECHO]  # names are at most 96 characters; never echo more than that
    snapshot = None
    if text.isdigit():
        number = row_id(text)
        snapshot = repository.get_snapshot(session, number) if number is not None else None
    elif "@" in text:
        snapshot = repository.get_snapshot_by_name(session, text)
    else:
        raise BadInput(f"{text!r} is not a snapshot id or name (a number or <project>@<sequence>)")
    if snapshot is None or not may_see_snapshot(session, user, snapshot):
        raise NotFound(f"no snapshot {text}")
    return snapshot


def _client_text(client: str | None) -> str | None:
    if client is None:
        return None
    return client[:MAX_CLIENT_LENGTH]


def create_snapshot(session: Session, orthanc: OrthancClient, user: User, project: Project, *,
                    include_test: bool = False, client: str | None = None) -> Snapshot:
    """Freeze the project's released items into a new snapshot ``<slug>@<n>`` (n = 1, 2, ... per project)."""
    check_export_role(user)
    if include_test and not may_see_test_split(session, user, project.id):
        raise Forbidden(f"{user.username} has no test-split access on project {project.slug}; ask an admin for "
                        "a test-access grant or leave the test split out")
    # The Orthanc work (QIDO, hashing new instances, reading the label objects) runs between transactions;
    # the sequence number, the new checksums and the snapshot row are written in one short transaction.
    collected = collect_release(session, orthanc, project, include_test=include_test,
                                end_transaction=session.commit)
    store_new_hashes(session, collected)
    project_repository.lock_project(session, project.id)  # one sequence number per snapshot
    sequence = repository.next_sequence(session, project.id)
    parent = repository.latest_snapshot(session, project.id)
    header = SnapshotHeader(name=f"{project.slug}@{sequence}", sequence=sequence,
                            parent=parent.name if parent is not None else None, include_test=include_test)
    manifest = manifest_bytes(collected, header)
    document = parse_manifest(manifest)
    snapshot = repository.add_snapshot(session, Snapshot(
        project_id=project.id, sequence=sequence, name=header.name, created_by=user.id, created_at=utcnow(),
        include_test=include_test, parent_id=parent.id if parent is not None else None, manifest=manifest,
        manifest_sha256=sha256_hex(manifest), item_count=int(document["counts"]["items"]),
        object_count=int(document["counts"]["objects"])))
    log_event(session, user, snapshot, DataFlowAction.CREATED, ExportFormat.MANIFEST, len(manifest), client)
    return snapshot


def rebuild_manifest(session: Session, orthanc: OrthancClient, snapshot: Snapshot) -> bytes:
    """The manifest built again from today's data for the snapshot's items; equal to the stored bytes as long
    as none of those items' released data has changed since (a replaced final label makes it differ)."""
    project = require_project(session, snapshot.project_id)
    document = parse_manifest(snapshot.manifest)
    header = SnapshotHeader(**document["snapshot"])
    return build_manifest(session, orthanc, project, header,
                          item_ids=[int(item["item_id"]) for item in document["items"]])


def list_snapshots(session: Session, user: User, project: Project) -> list[Snapshot]:
    check_export_role(user)
    return [s for s in repository.list_snapshots(session, project.id) if may_see_snapshot(session, user, s)]


def diff_snapshots(session: Session, user: User, older_ref: str | int, newer_ref: str | int) -> dict[str, Any]:
    older = snapshot_for(session, user, older_ref)
    newer = snapshot_for(session, user, newer_ref)
    if older.project_id != newer.project_id:
        raise BadInput(f"snapshots {older.name} and {newer.name} are of different projects; only snapshots of one "
                       "project can be compared")
    return diff_manifests(parse_manifest(older.manifest), parse_manifest(newer.manifest))


def log_event(session: Session, user: User, snapshot: Snapshot, action: DataFlowAction, export_format: ExportFormat,
              byte_count: int | None, client: str | None) -> DataFlowEvent:
    """One data-flow row and its audit event (who, which snapshot, which format, how many bytes)."""
    event = repository.add_event(session, DataFlowEvent(
        user_id=user.id, username=user.username, at=utcnow(), snapshot_id=snapshot.id, action=action.value,
        format=export_format.value, byte_count=byte_count, client=_client_text(client)))
    record(session, user.username, f"snapshot_{action.value}", "snapshot", snapshot.id, snapshot=snapshot.name,
           format=export_format.value, byte_count=byte_count, data_flow_event_id=event.id)
    return event


def finish_download(session: Session, event_id: int, byte_count: int) -> None:
    """Record the byte count of a streamed download once its last byte has been produced."""
    event = session.get(DataFlowEvent, event_id)
    if event is not None:
        event.byte_count = byte_count
        session.flush()


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: str
    username: str
    action: str
    snapshot: str
    format: str
    byte_count: int | None
    client: str | None


def data_flow_log(session: Session, user: User, *, project_id: int | None = None,
                  limit: int = 200) -> list[LogEntry]:
    """The newest data-flow events first (admins only)."""
    if user.role != Role.ADMIN.value:
        raise Forbidden("the data-flow log is for admins")
    if not 1 <= limit <= 10_000:
        raise BadInput("limit must be between 1 and 10000")
    events = repository.list_events(session, project_id=project_id, limit=limit)
    names = repository.snapshot_names(session, [e.snapshot_id for e in events])
    return [LogEntry(id=e.id, at=e.at.isoformat(), username=e.username, action=e.action,
                     snapshot=names.get(e.snapshot_id, str(e.snapshot_id)), format=e.format,
                     byte_count=e.byte_count, client=e.client) for e in events]


def snapshot_view(snapshot: Snapshot) -> dict[str, Any]:
    return {"id": snapshot.id, "name": snapshot.name, "project_id": snapshot.project_id,
            "sequence": snapshot.sequence, "created_by": snapshot.created_by,
            "created_at": snapshot.created_at.isoformat(), "include_test": snapshot.include_test,
            "parent_id": snapshot.parent_id, "manifest_sha256": snapshot.manifest_sha256,
            "item_count": snapshot.item_count, "object_count": snapshot.object_count}
