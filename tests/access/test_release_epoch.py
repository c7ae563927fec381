"""The ML role's released view is reused while the database is unchanged (one epoch statement instead of the
computation) and recomputed at once after a new release, a new draft, a split change, a withdrawn release or
a revoked test-split grant, whether the change comes through this process's ORM or from another process
(a raw DBAPI connection, which no ORM event sees). Committed data in separate sessions, as in the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.access import release_epoch
from pacslabel.access.policy import AccessPolicy, AccessSnapshot, take_snapshot
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.export import grants
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.tasks.models import Task
from pacslabel.users.models import User
from tests.access.test_ml_access_cost import _counting, _release, _version


@pytest.fixture
def world(session_factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """Four released items (odd ones with a draft beside the final version), a reader, an ML user, an admin."""
    release_epoch.forget()
    with session_factory() as session:
        reader, ml = User(username="reader", role="annotator"), User(username="ml", role="ml")
        admin = User(username="admin", role="admin")
        project = Project(slug="epoch", name="epoch", definition={}, definition_sha256="0" * 64)
        session.add_all([reader, ml, admin, project])
        session.flush()
        _release(session, project, reader, 0, 4)
        session.commit()
    yield session_factory
    release_epoch.forget()


def _snapshot(sessions: sessionmaker[Session]) -> tuple[AccessSnapshot, list[str]]:
    """The ML user's snapshot in a fresh session (a gateway request), with the statements it took."""
    with sessions() as session:
        ml = session.scalars(select(User).where(User.username == "ml")).one()
        with _counting(session) as statements:
            snapshot = take_snapshot(AccessPolicy(session, ml))
        session.commit()
    return snapshot, statements


def _study(n: int) -> str:
    return f"1.2.826.0.7.{n}"


def _item_id(sessions: sessionmaker[Session], n: int) -> int:
    with sessions() as session:
        return session.scalars(select(ProjectItem.id).where(ProjectItem.unit_uid == _study(n))).one()


def test_an_unchanged_database_reuses_the_view_after_one_epoch_statement(world: sessionmaker[Session]) -> None:
    cold, cold_statements = _snapshot(world)
    warm, warm_statements = _snapshot(world)
    assert len(cold_statements) == 6  # test-split grants, epoch, and the four queries of the computation
    assert len(warm_statements) == 2  # test-split grants and the epoch
    assert warm.series is cold.series and warm.studies == {_study(n) for n in range(4)}
    assert warm.restricted_instances(_study(1), f"{_study(1)}.9") == {f"{_study(1)}.9.2"}


def test_orm_changes_in_this_process_are_seen_by_the_next_request(world: sessionmaker[Session]) -> None:
    _snapshot(world)
    with world() as session:  # a new release
        project = session.scalars(select(Project)).one()
        reader = session.scalars(select(User).where(User.username == "reader")).one()
        _release(session, project, reader, 4, 1)
        session.commit()
    snapshot, statements = _snapshot(world)
    assert _study(4) in (snapshot.studies or ()) and len(statements) == 6

    with world() as session:  # a draft beside a label that was visible whole
        task = session.scalars(select(Task).join(ProjectItem).where(ProjectItem.unit_uid == _study(0))).one()
        reader = session.scalars(select(User).where(User.username == "reader")).one()
        session.add(_version(task, _study(0), f"{_study(0)}.9", f"{_study(0)}.9.3", 3, reader))
        session.commit()
    assert _snapshot(world)[0].restricted_instances(_study(0), f"{_study(0)}.9") == {f"{_study(0)}.9.2"}

    with world() as session:  # an item moved into the test split, in place
        item = session.get(ProjectItem, _item_id(world, 2))
        assert item is not None
        item.split = "test"
        session.commit()
    snapshot, _ = _snapshot(world)
    assert _study(2) not in (snapshot.studies or ()) and _study(3) in (snapshot.studies or ())


def test_changes_from_another_process_are_seen_through_the_epoch(world: sessionmaker[Session],
                                                                 db_engine: Engine) -> None:
    _snapshot(world)
    moved, withdrawn = _item_id(world, 1), _item_id(world, 3)

    def raw(sql: str) -> None:  # a DBAPI connection of its own: no SQLAlchemy or ORM event sees it
        connection = db_engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            connection.commit()
        finally:
            connection.close()

    generation = release_epoch.generation()
    raw(f"UPDATE project_items SET split = 'test' WHERE id = {moved}")
    assert release_epoch.generation() == generation  # only the epoch can tell
    assert _study(1) not in (_snapshot(world)[0].studies or ())
    raw(f"DELETE FROM final_labels WHERE item_id = {withdrawn}")
    snapshot, _ = _snapshot(world)
    assert snapshot.studies == {_study(0), _study(2)}


def test_a_revoked_test_split_grant_is_seen_by_the_next_request(world: sessionmaker[Session]) -> None:
    with world() as session:
        item = session.get(ProjectItem, _item_id(world, 0))
        assert item is not None
        item.split = "test"
        session.commit()
    assert _study(0) not in (_snapshot(world)[0].studies or ())
    with world() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        grants.grant_test_access(session, admin, "epoch", "ml", "held-out evaluation")
        session.commit()
    assert _study(0) in (_snapshot(world)[0].studies or ())
    assert _study(0) in (_snapshot(world)[0].studies or ())  # reused, under the new key
    with world() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        grants.revoke_test_access(session, admin, "epoch", "ml")
        session.commit()
    snapshot, statements = _snapshot(world)
    assert _study(0) not in (snapshot.studies or ()) and len(statements) == 2  # the stored no-grant view


def test_uncommitted_release_writes_are_neither_shared_nor_taken_from_the_store(world: sessionmaker[Session]) -> None:
    _snapshot(world)
    with world() as writer:
        project = writer.scalars(select(Project)).one()
        reader = writer.scalars(select(User).where(User.username == "reader")).one()
        _release(writer, project, reader, 9, 1)  # flushed, not committed
        ml = writer.scalars(select(User).where(User.username == "ml")).one()
        assert _study(9) in (take_snapshot(AccessPolicy(writer, ml)).studies or ())  # its own writes
        if writer.get_bind().dialect.name != "sqlite":  # SQLite sessions begin IMMEDIATE: no reader meanwhile
            others, _ = _snapshot(world)
            assert _study(9) not in (others.studies or ())
        writer.rollback()
    snapshot, _ = _snapshot(world)
    assert _study(9) not in (snapshot.studies or ()) and len(snapshot.studies or ()) == 4
    with world() as session:
        assert session.scalars(select(AnnotationVersion).where(
            AnnotationVersion.study_instance_uid == _study(9))).first() is None
