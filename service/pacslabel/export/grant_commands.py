"""`pacslabel access …`: give, revoke and list test-split access from the command line.

Whoever runs the CLI has the database, hence admin rights; the grant row and the audit event name an admin
user: the one given with ``--as``, else the first active admin."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Test-split access for ML users (admins).", no_args_is_help=True)

def _sessions():  # type: ignore[no-untyped-def]
    from pacslabel.db import create_db_engine, make_sessionmaker
    from pacslabel.logs import configure_logging
    from pacslabel.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return make_sessionmaker(create_db_engine(settings.effective_database_url))


def _actor(session):  # type: ignore[no-untyped-def]
    """The first active admin (recorded as granter or revoker when ``--as`` is not given)."""
    from sqlalchemy import select

    from pacslabel.errors import PacslabelError
    from pacslabel.users.models import Role, User

    admin = session.scalar(select(User).where(User.role == Role.ADMIN.value, User.active.is_(True))
                           .order_by(User.id).limit(1))
    if admin is None:
        raise PacslabelError("no active admin user; create one with `pacslabel user add NAME --role admin`", 1)
    return admin


@app.command("grant-test")
def grant_test(user: str, project: str,
               reason: Annotated[str, typer.Option(help="Why this user may see the test split (audited).")],
               as_admin: Annotated[str | None, typer.Option("--as", help="Admin user recorded as granter.")] = None
               ) -> None:
    """Let USER see the test split of PROJECT (slug or id)."""
    from pacslabel.db import session_scope
    from pacslabel.export import grants

    with session_scope(_sessions()) as session:
        actor = _named_admin(session, as_admin) if as_admin else _actor(session)
        row = grants.grant_test_access(session, actor, project, user, reason)
        typer.echo(f"test access granted to {user} on {project} (grant {row.id})")


@app.command("revoke-test")
def revoke_test(user: str, project: str,
                as_admin: Annotated[str | None, typer.Option("--as", help="Admin user recorded as revoker.")] = None
                ) -> None:
    """Close the test split of PROJECT to USER again."""
    from pacslabel.db import session_scope
    from pacslabel.export import grants

    with session_scope(_sessions()) as session:
        actor = _named_admin(session, as_admin) if as_admin else _actor(session)
        row = grants.revoke_test_access(session, actor, project, user)
        typer.echo(f"test access of {user} on {project} revoked (grant {row.id})")


@app.command("list")
def list_grants(project: Annotated[str | None, typer.Argument(help="Only this project.")] = None,
                include_revoked: Annotated[bool, typer.Option("--all", help="Revoked grants too.")] = False,
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Active test-access grants (with --all: revoked ones too)."""
    from pacslabel.db import session_scope
    from pacslabel.export import grants

    with session_scope(_sessions()) as session:
        views = grants.list_test_access(session, _actor(session), project, include_revoked=include_revoked)
        if as_json:
            typer.echo(json.dumps([v.as_json() for v in views], indent=2))
            return
        if not views:
            typer.echo("no test-access grants")
        for v in views:
            state = "active" if v.revoked_at is None else f"revoked {v.revoked_at.isoformat()} by {v.revoked_by}"
            typer.echo(f"{v.project}\t{v.username}\tgranted {v.granted_at.isoformat()} by {v.granted_by}\t"
                       f"{state}\t{v.reason}")


def _named_admin(session, name: str):  # type: ignore[no-untyped-def]
    from pacslabel.errors import Forbidden, NotFound
    from pacslabel.users import repository
    from pacslabel.users.models import Role

    user = repository.get_user_by_name(session, name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    if user.role != Role.ADMIN.value:
        raise Forbidden(f"{name} is not an admin")
    return user
