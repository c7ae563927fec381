"""`pacslabel export ...`: dataset snapshots and downloads from the command line.

    pacslabel export snapshot PROJECT [--include-test]
    pacslabel export list PROJECT
    pacslabel export download SNAPSHOT --format dicom-zip|dicom-tree|nifti|nifti-zip --out DIR
    pacslabel export diff A B
    pacslabel export verify SNAPSHOT
    pacslabel export log [--project P]

Whoever runs the CLI has the database; creations and downloads are recorded in the data-flow log under the
user given with ``--as`` (an admin or ml user), else the first active admin, with the client "cli".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Dataset snapshots: create, list, download (DICOM / NIfTI), compare, data-flow log.",
                  no_args_is_help=True)

AsUser = Annotated[str | None, typer.Option("--as", help="User recorded in the data-flow log (admin or ml).")]
CLI_CLIENT = "cli"
FORMATS = ("dicom-zip", "dicom-tree", "nifti", "nifti-zip")


def _settings():  # type: ignore[no-untyped-def]
    from pacslabel.cli import _settings

    return _settings()


def _sessions(settings):  # type: ignore[no-untyped-def]
    from pacslabel.cli import _session_factory

    return _session_factory(settings)


def _actor(session: Any, username: str | None) -> Any:
    from sqlalchemy import select

    from pacslabel.errors import NotFound, PacslabelError
    from pacslabel.users.models import Role, User

    if username is not None:
        user = session.scalar(select(User).where(User.username == username, User.active.is_(True)))
        if user is None:
            raise NotFound(f"no active user {username!r}")
        return user
    admin = session.scalar(select(User).where(User.role == Role.ADMIN.value, User.active.is_(True))
                           .order_by(User.id).limit(1))
    if admin is None:
        raise PacslabelError("no active admin user; create one with `pacslabel user add NAME --role admin` or "
                             "name a user with --as", 1)
    return admin


@app.command("snapshot")
def snapshot(project: Annotated[str, typer.Argument(help="Project slug or id.")],
             include_test: Annotated[bool, typer.Option(help="Include the test split (needs test access).")] = False,
             as_user: AsUser = None) -> None:
    """Freeze the released items of PROJECT into a new immutable snapshot."""
    from pacslabel.db import session_scope
    from pacslabel.export import snapshots
    from pacslabel.orthanc.client import OrthancClient

    settings = _settings()
    with OrthancClient.from_settings(settings) as orthanc, session_scope(_sessions(settings)) as session:
        user = _actor(session, as_user)
        row = snapshots.create_snapshot(session, orthanc, user, snapshots.project_by_reference(session, project),
                                        include_test=include_test, client=CLI_CLIENT)
        typer.echo(f"snapshot {row.name}: {row.item_count} items, {row.object_count} objects, "
                   f"manifest sha256 {row.manifest_sha256}")


@app.command("list")
def list_snapshots(project: Annotated[str, typer.Argument(help="Project slug or id.")],
                   as_user: AsUser = None) -> None:
    """The snapshots of PROJECT, oldest first."""
    from pacslabel.db import session_scope
    from pacslabel.export import snapshots

    with session_scope(_sessions(_settings())) as session:
        user = _actor(session, as_user)
        rows = snapshots.list_snapshots(session, user, snapshots.project_by_reference(session, project))
        for row in rows:
            test = " +test" if row.include_test else ""
            typer.echo(f"{row.name}\t{row.created_at.isoformat()}\t{row.item_count} items\t"
                       f"{row.object_count} objects{test}\t{row.manifest_sha256}")
        if not rows:
            typer.echo(f"no snapshots of {project}")


@app.command("download")
def download(snapshot: Annotated[str, typer.Argument(help="Snapshot id or name (project@n).")],
             format: Annotated[str, typer.Option("--format", help=" | ".join(FORMATS))] = "dicom-zip",  # noqa: A002
             out: Annotated[Path, typer.Option("--out", help="Folder to write into.")] = Path("."),
             progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
             as_user: AsUser = None) -> None:
    """Download SNAPSHOT as DICOM (zip or patient/study/series folders) or NIfTI + MONAI datalist."""
    from tqdm import tqdm

    from pacslabel.db import session_scope
    from pacslabel.errors import BadInput
    from pacslabel.export import snapshots
    from pacslabel.export.archives import download_to
    from pacslabel.export.manifest import parse_manifest
    from pacslabel.export.models import DataFlowAction, ExportFormat
    from pacslabel.orthanc.client import OrthancClient

    if format not in FORMATS:
        raise BadInput(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    settings = _settings()
    sessions = _sessions(settings)
    with session_scope(sessions) as session:  # short: no transaction is open while the download runs
        user = _actor(session, as_user)
        row = snapshots.snapshot_for(session, user, snapshot)
        snapshot_id, user_id, manifest = row.id, user.id, row.manifest
    document = parse_manifest(manifest)
    with OrthancClient.from_settings(settings) as orthanc, tqdm(
            total=int(document["counts"]["objects"]), unit="obj", disable=not progress, desc=str(row.name)) as bar:
        target, byte_count = download_to(orthanc, document, manifest, format, out, progress=bar.update)
    with session_scope(sessions) as session:
        from pacslabel.export.models import Snapshot
        from pacslabel.users.models import User

        snapshots.log_event(session, session.get(User, user_id), session.get(Snapshot, snapshot_id),
                            DataFlowAction.DOWNLOADED, ExportFormat(format), byte_count, CLI_CLIENT)
    typer.echo(f"{target} ({byte_count} bytes)")


@app.command("verify")
def verify(snapshot: Annotated[str, typer.Argument(help="Snapshot id or name (project@n).")],
           as_user: AsUser = None) -> None:
    """Rebuild the manifest of SNAPSHOT from today's data and compare it with the stored bytes."""
    from pacslabel.db import session_scope
    from pacslabel.errors import Conflict
    from pacslabel.export import snapshots
    from pacslabel.export.manifest import sha256_hex
    from pacslabel.orthanc.client import OrthancClient

    settings = _settings()
    with OrthancClient.from_settings(settings) as orthanc, session_scope(_sessions(settings)) as session:
        row = snapshots.snapshot_for(session, _actor(session, as_user), snapshot)
        rebuilt = snapshots.rebuild_manifest(session, orthanc, row)
    if rebuilt != row.manifest:
        raise Conflict(f"snapshot {row.name}: the released data changed since it was taken (stored manifest sha256 "
                       f"{row.manifest_sha256}, rebuilt {sha256_hex(rebuilt)}); the stored snapshot stays as it was")
    typer.echo(f"snapshot {row.name}: manifest rebuilt byte for byte (sha256 {row.manifest_sha256})")


@app.command("diff")
def diff(older: Annotated[str, typer.Argument(help="The earlier snapshot (id or name).")],
         newer: Annotated[str, typer.Argument(help="The later snapshot (id or name).")],
         as_json: Annotated[bool, typer.Option("--json", help="Print the whole diff as JSON.")] = False,
         as_user: AsUser = None) -> None:
    """What was released (added, removed, changed items) from OLDER to NEWER."""
    from pacslabel.db import session_scope
    from pacslabel.export import snapshots

    with session_scope(_sessions(_settings())) as session:
        result = snapshots.diff_snapshots(session, _actor(session, as_user), older, newer)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    counts = result["counts"]
    typer.echo(f"{result['from']} -> {result['to']}: {counts['added']} added, {counts['removed']} removed, "
               f"{counts['changed']} changed, {counts['unchanged']} unchanged")
    for key in ("added", "removed"):
        for item in result[key]:
            typer.echo(f"{key}\titem {item['item_id']}\t{item['split']}\t{item['study_instance_uid']}")
    for change in result["changed"]:
        typer.echo(f"changed\titem {change['item_id']}\t{change['before']['labels']} -> {change['after']['labels']}")


@app.command("log")
def log(project: Annotated[str | None, typer.Option(help="Only this project (slug or id).")] = None,
        limit: Annotated[int, typer.Option(help="How many events, newest first.")] = 50,
        as_user: AsUser = None) -> None:
    """The data-flow log: who created or downloaded which snapshot, when, in which format."""
    from pacslabel.db import session_scope
    from pacslabel.export import snapshots

    with session_scope(_sessions(_settings())) as session:
        user = _actor(session, as_user)
        project_id = snapshots.project_by_reference(session, project).id if project else None
        entries = snapshots.data_flow_log(session, user, project_id=project_id, limit=limit)
    for entry in entries:
        size = "-" if entry.byte_count is None else str(entry.byte_count)
        typer.echo(f"{entry.at}\t{entry.username}\t{entry.action}\t{entry.snapshot}\t{entry.format}\t{size}\t"
                   f"{entry.client or '-'}")
    if not entries:
        typer.echo("no data-flow events")
