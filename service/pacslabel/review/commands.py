"""`pacslabel review ...`: import clinical outcomes as ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Review: import clinical outcomes as ground truth.", no_args_is_help=True)


@app.callback()
def review() -> None:
    """Review: import clinical outcomes as ground truth."""
    # A callback keeps `review` a command group (typer runs a lone command as the app itself).


@app.command("import-outcomes")
def import_outcomes(
    project: Annotated[str, typer.Argument(help="Project slug.")],
    file: Annotated[Path, typer.Argument(help="Outcomes CSV keyed by patient pseudonym or accession number.")],
    admin: Annotated[str, typer.Option("--as", help="The admin account the import is recorded under.")] = "admin",
) -> None:
    """Import FILE's answers to the protocol's questions; they override the consensus of the items they name."""
    from pacslabel.cli import _session_factory, _settings
    from pacslabel.db import session_scope
    from pacslabel.deid.pseudonyms import Pseudonymizer
    from pacslabel.errors import BadInput, Forbidden
    from pacslabel.projects.service import require_project
    from pacslabel.review.ground_truth import import_outcomes as run_import
    from pacslabel.users import repository as user_repository
    from pacslabel.users.models import Role

    settings = _settings()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"{file}: cannot read ({exc.strerror})") from None
    with session_scope(_session_factory(settings)) as session:
        user = user_repository.get_user_by_name(session, admin)
        if user is None or user.role != Role.ADMIN.value or not user.active:
            raise Forbidden(f"{admin!r} is not an active admin; outcomes are imported by an admin (--as NAME)")
        result = run_import(
            session,
            require_project(session, project),
            data,
            file.name,
            user,
            Pseudonymizer(settings.secret("pseudonym_key").encode()),
        )
    typer.echo(
        f"import {result.import_id}: {result.rows} rows, {result.answers} answers, "
        f"{len(result.item_ids)} items now have ground truth"
    )
