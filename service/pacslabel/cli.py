"""The `pacslabel` command line. Each domain room contributes its own sub-commands."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from pacslabel.errors import PacslabelError
from pacslabel.settings import ConfigurationError, Settings, load_settings

app = typer.Typer(help="pacslabel: de-identifying DICOM ingest, blinded reading, versioned SEG/SR annotations.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
user_app = typer.Typer(help="Manage users and their roles.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens for API and DICOMweb clients.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


def _settings() -> Settings:
    from pacslabel.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _session_factory(settings: Settings):  # type: ignore[no-untyped-def]
    from pacslabel.db import create_db_engine, make_sessionmaker

    return make_sessionmaker(create_db_engine(settings.effective_database_url))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    from pacslabel.db.migrate import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings.effective_database_url)
    typer.echo("database is at the newest schema")


@app.command()
def config(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           show_secrets: Annotated[bool, typer.Option(help="Print secrets instead of ********.")] = False) -> None:
    """Print the effective settings, including how to reach Orthanc directly."""
    data = _settings().public_dict(show_secrets=show_secrets)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    for key in sorted(data):
        typer.echo(f"{key} = {data[key]}")


@user_app.command("add")
def user_add(name: str,
             role: Annotated[str, typer.Option(help="admin, reviewer, annotator or ml")],
             password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
             display_name: Annotated[str | None, typer.Option(help="Name shown in the UI.")] = None) -> None:
    """Add a user. Without --password-stdin the user can only use API tokens."""
    from pacslabel.db import session_scope
    from pacslabel.users import service

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    settings = _settings()
    with session_scope(_session_factory(settings)) as session:
        user = service.create_user(session, name, role, password, display_name)
        from pacslabel.audit.service import record

        record(session, "cli", "user_add", "user", user.id, role=user.role)
    typer.echo(f"user {name} added with role {role}")


@user_app.command("list")
def user_list() -> None:
    """List users and roles."""
    from pacslabel.db import session_scope
    from pacslabel.users import repository

    with session_scope(_session_factory(_settings())) as session:
        for user in repository.list_users(session):
            typer.echo(f"{user.username}\t{user.role}\t{'active' if user.active else 'disabled'}")


@user_app.command("passwd")
def user_passwd(name: str) -> None:
    """Set a user's password, read from standard input."""
    from pacslabel.db import session_scope
    from pacslabel.users import service

    password = sys.stdin.readline().rstrip("\n")
    with session_scope(_session_factory(_settings())) as session:
        service.set_password(session, name, password)
    typer.echo(f"password of {name} changed")


@token_app.command("create")
def token_create(name: str, label: Annotated[str, typer.Option(help="What the token is for.")] = "cli") -> None:
    """Print a new bearer token for user NAME (stored hashed; shown once)."""
    from pacslabel.audit.service import record
    from pacslabel.db import session_scope
    from pacslabel.users import service

    with session_scope(_session_factory(_settings())) as session:
        token = service.create_api_token(session, name, label)
        record(session, "cli", "token_create", "user", name, label=label)
    typer.echo(token)


@app.command()
def web() -> None:
    """Run the web app alone (worklist, API, DICOMweb gateway, OHIF)."""
    import uvicorn

    from pacslabel.web.app import create_app

    settings = _settings()
    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=5)


@app.command()
def orthanc() -> None:
    """Run the managed Orthanc alone, in the foreground."""
    from pacslabel.orthanc.supervisor import OrthancProcess

    settings = _settings()
    with OrthancProcess(settings) as process:
        typer.echo(f"Orthanc at {settings.orthanc_url} (DICOM port {settings.orthanc_dicom_port}); Ctrl-C stops")
        process.wait()


@app.command()
def up(no_scp: Annotated[bool, typer.Option(help="Do not start the storage SCP.")] = False,
       workers: Annotated[int | None, typer.Option(help="Worker processes (default from settings).")] = None,
       demo: Annotated[bool, typer.Option(help="Add demo users and send synthetic studies through the SCP.")] = False,
       demo_scale: Annotated[str, typer.Option(help="Demo study size: full or small.")] = "full",
       ) -> None:
    """Start everything: Orthanc (unless external), migrations, web app, storage SCP and workers."""
    from pacslabel.supervision import run_all

    settings = _settings()
    after_start = None
    if demo:
        from pacslabel.demo.seeding import DEMO_PASSWORD, seed_demo

        def after_start() -> None:
            seed_demo(settings, _session_factory(settings), scale=demo_scale)
            typer.echo(f"demo ready: log in at {settings.web_url} as admin, reader1..3, reviewer1 or ml1 "
                       f"(password {DEMO_PASSWORD})", err=True)

    run_all(settings, start_scp=not no_scp, workers=settings.workers if workers is None else workers,
            after_start=after_start)


def _register_domain_commands() -> None:
    from pacslabel.demo.commands import app as demo_app

    app.add_typer(demo_app, name="demo", help="Synthetic studies full of PHI, for demos and tests.")
    from pacslabel.projects.commands import app as project_app

    app.add_typer(project_app, name="project", help="Annotation projects as YAML files: apply, sync, release.")
    from pacslabel.ingest import commands as ingest_commands

    app.add_typer(ingest_commands.app, name="ingest", help="Ingest status and quarantine, for PACS administrators.")
    from pacslabel.review.commands import app as review_app

    app.add_typer(review_app, name="review", help="Review: import clinical outcomes as ground truth.")
    from pacslabel.export.grant_commands import app as access_app

    app.add_typer(access_app, name="access", help="Test-split access for ML users: grant-test, revoke-test, list.")
    from pacslabel.export.commands import app as export_app

    app.add_typer(export_app, name="export", help="Dataset snapshots: create, list, download, diff, data-flow log.")

    @app.command()
    def scp() -> None:
        """Run the storage SCP alone."""
        ingest_commands.run_scp(_settings())

    @app.command()
    def worker(count: Annotated[int, typer.Option(help="Worker processes.")] = 1) -> None:
        """Run de-identification/forwarding workers alone."""
        ingest_commands.run_worker(_settings(), count)


def main() -> None:
    _register_domain_commands()
    try:
        app()
    except ConfigurationError as exc:
        typer.echo(f"pacslabel: {exc}", err=True)
        raise SystemExit(2) from None
    except PacslabelError as exc:
        typer.echo(f"pacslabel: {exc.message}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
