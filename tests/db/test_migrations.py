"""Migrations build the whole schema on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from pacslabel.db import all_models  # noqa: F401
from pacslabel.db.base import Base
from pacslabel.db.migrate import current_revision, upgrade_to_head


def test_migrations_reach_head_and_create_every_table(db_url: str, db_engine: Engine) -> None:
    assert current_revision(db_url) is not None
    tables = set(inspect(db_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migrations_match_the_models(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_running_migrations_twice_changes_nothing(db_url: str) -> None:
    before = current_revision(db_url)
    upgrade_to_head(db_url)
    assert current_revision(db_url) == before
