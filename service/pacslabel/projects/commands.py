"""`pacslabel project ...`: apply project files, sync items from the catalog, import clinical context."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Annotation projects: apply project files, sync items, import clinical context.",
                  no_args_is_help=True)


def _session_scope():  # type: ignore[no-untyped-def]
    from pacslabel.cli import _session_factory, _settings
    from pacslabel.db import session_scope

    return session_scope(_session_factory(_settings()))


def _read(path: Path) -> str:
    from pacslabel.errors import BadInput

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read ({exc})") from None


@app.command("apply")
def apply(file: Annotated[Path, typer.Argument(help="The project file (YAML).")],
          sync: Annotated[bool, typer.Option(help="Also add matching catalog items now.")] = True) -> None:
    """Create or update a project from FILE. The same file again changes nothing."""
    from pacslabel.projects import service

    with _session_scope() as session:
        result = service.apply_project_file(session, _read(file), "cli", filename=str(file))
        synced = service.sync_project_items(session, result.project) if sync else None
    if result.created:
        typer.echo(f"project {result.project.slug} created (protocol version {result.protocol_version})")
    elif not result.changed:
        typer.echo(f"project {result.project.slug} unchanged (protocol version {result.protocol_version})")
    else:
        bumped = " (new protocol version)" if result.protocol_bumped else ""
        typer.echo(f"project {result.project.slug} updated: {', '.join(result.changed_sections)}; "
                   f"protocol version {result.protocol_version}{bumped}")
    if synced is not None:
        typer.echo(f"items: {synced.added} added, {synced.released} released, {synced.updated} updated")


@app.command("sync")
def sync(slug: Annotated[str | None, typer.Argument(help="Project slug; all active projects if omitted.")] = None,
         quiet_s: Annotated[float, typer.Option(help="Only series without new instances for this long.")] = 0.0,
         ) -> None:
    """Add newly ingested catalog studies/series that match a project as items."""
    from pacslabel.projects import repository, service

    with _session_scope() as session:
        projects = ([service.require_project(session, slug)] if slug
                    else repository.list_projects(session, active_only=True))
        for project in projects:
            result = service.sync_project_items(session, project, quiet_s=quiet_s)
            typer.echo(f"{project.slug}: {result.added} added, {result.released} released, "
                       f"{result.updated} updated, {result.new_patients} new patients")


@app.command("list")
def list_projects() -> None:
    """List projects with their item counts."""
    from pacslabel.projects import repository, service

    with _session_scope() as session:
        for project in repository.list_projects(session):
            summary = service.project_summary(session, project)
            splits = ", ".join(f"{k} {v}" for k, v in sorted(summary["items_per_split"].items()))
            typer.echo(f"{project.slug}\t{'active' if project.active else 'inactive'}\t"
                       f"protocol v{project.protocol_version}\t{summary['items']} items ({splits})")


@app.command("release")
def release(slug: str, count: Annotated[int, typer.Option(help="How many held items to release.")] = 10) -> None:
    """Release held items of a project that does not release continuously."""
    from pacslabel.projects import service

    with _session_scope() as session:
        released = service.release_held_items(session, service.require_project(session, slug), count, "cli")
    typer.echo(f"{released} items released")


@app.command("import-clinical")
def import_clinical(slug: str, file: Annotated[Path, typer.Argument(help="CSV keyed by pseudonymous patient id.")],
                    ) -> None:
    """Import de-identified clinical context (age, sex, declared attributes) per pseudonymous patient."""
    from pacslabel.projects import service
    from pacslabel.projects.clinical import import_clinical_csv

    with _session_scope() as session:
        result = import_clinical_csv(session, service.require_project(session, slug), _read(file), "cli",
                                     filename=str(file))
    typer.echo(f"{result.rows} rows imported for {result.patients} patients")
