"""`pacslabel access grant-test | revoke-test | list` (the typer app mounted as `pacslabel access`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from pacslabel.audit.models import AuditEvent
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.errors import NotFound, PacslabelError
from pacslabel.export.grant_commands import app
from pacslabel.users import service as user_service
from tests.projects.helpers import apply_dict, project_dict


@pytest.fixture
def cli_db(cli_env: Path, db_url: str) -> str:
    return db_url


def test_grant_list_and_revoke_from_the_command_line_are_audited(cli_db: str) -> None:
    runner = CliRunner()
    engine = create_db_engine(cli_db)
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "ml1", "ml")
        apply_dict(session, project_dict(slug="ml-cli"))
    # No admin yet: a clear refusal rather than an anonymous grant.
    refused = runner.invoke(app, ["grant-test", "ml1", "ml-cli", "--reason", "evaluation"])
    assert isinstance(refused.exception, PacslabelError) and "no active admin" in str(refused.exception)
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "boss", "admin")

    granted = runner.invoke(app, ["grant-test", "ml1", "ml-cli", "--reason", "evaluation of model v3"])
    assert granted.exit_code == 0, granted.output
    assert "test access granted to ml1 on ml-cli" in granted.output
    listed = runner.invoke(app, ["list", "--json"])
    [grant] = json.loads(listed.output)
    assert (grant["project"], grant["username"], grant["granted_by"], grant["active"]) == (
        "ml-cli", "ml1", "boss", True)
    assert runner.invoke(app, ["list", "ml-cli"]).output.startswith("ml-cli\tml1\tgranted ")

    missing = runner.invoke(app, ["revoke-test", "nobody", "ml-cli"])
    assert isinstance(missing.exception, NotFound) and "no user 'nobody'" in str(missing.exception)
    revoked = runner.invoke(app, ["revoke-test", "ml1", "ml-cli"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert runner.invoke(app, ["list"]).output.strip() == "no test-access grants"
    assert "revoked" in runner.invoke(app, ["list", "--all"]).output
    with session_scope(make_sessionmaker(engine)) as session:
        actions = [(e.actor, e.action) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("test_access_%")).order_by(AuditEvent.id))]
    assert actions == [("boss", "test_access_grant"), ("boss", "test_access_revoke")]
    engine.dispose()


@pytest.mark.parametrize("reference", ["99999999999999999999", "2147483648", "\u00b2", "0"])
def test_a_project_reference_that_is_no_row_id_is_not_found_rather_than_a_crash(cli_db: str, reference: str) -> None:
    engine = create_db_engine(cli_db)
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "ml1", "ml")
        user_service.create_user(session, "boss", "admin")
    engine.dispose()
    result = CliRunner().invoke(app, ["grant-test", "ml1", reference, "--reason", "evaluation of model v3"])
    assert isinstance(result.exception, NotFound) and "no project" in str(result.exception)
