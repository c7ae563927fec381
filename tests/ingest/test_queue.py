"""The queue: exclusive claims under concurrency (SQLite and PostgreSQL), leases, retry, dead owners."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.ingest import queue
from pacslabel.ingest.models import IngestItem, ItemStatus


def _fill(session: Session, count: int) -> None:
    for n in range(count):
        queue.enqueue(session, spool_name=f"f{n}.dcm", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                      sop_uid_hmac=f"{n:064x}", calling_ae="CT1", called_ae="PACSLABEL", source_host="127.0.0.1",
                      route="default", size_bytes=10)
    session.commit()


def test_concurrent_claims_never_hand_the_same_row_to_two_workers(db_url: str, db_session: Session) -> None:
    _fill(db_session, 300)
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(slot: int) -> None:
        engine = create_db_engine(db_url)
        owner = f"test:{slot}"
        try:
            start.wait(timeout=60)  # all claim from the first row on: on a loaded machine one thread could
            while True:              # otherwise drain the queue before the others have started
                items = queue.claim(engine, owner, limit=5, lease_s=600)
                if not items:
                    return
                claimed[slot].extend(item.id for item in items)
                time.sleep(0.001)  # let a waiting claimer in between two claims, as a worker's real work would
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    everything = [i for ids in claimed for i in ids]
    assert len(everything) == len(set(everything)) == 300
    assert sum(1 for ids in claimed if ids) >= 2  # they really competed
    owners = dict(db_session.execute(select(IngestItem.id, IngestItem.lease_owner)).all())
    for slot, ids in enumerate(claimed):
        assert all(owners[i] == f"test:{slot}" for i in ids)


def test_expired_lease_is_reclaimed_and_retry_delays_the_row(db_url: str, db_session: Session) -> None:
    _fill(db_session, 2)
    engine = create_db_engine(db_url)
    factory = make_sessionmaker(engine)
    try:
        first = queue.claim(engine, "dead-worker", limit=1, lease_s=0.2)
        assert [i.id for i in first] == [1]
        other = queue.claim(engine, "live-worker", limit=5, lease_s=60)
        assert [i.id for i in other] == [2]  # row 1 is still leased
        time.sleep(0.3)
        again = queue.claim(engine, "live-worker", limit=5, lease_s=60)
        assert [(i.id, i.attempts) for i in again] == [(1, 2)]
        with session_scope(factory) as session:
            queue.release_for_retry(session, [1], "live-worker", 0.5, "Orthanc unavailable")
        assert queue.claim(engine, "live-worker", limit=5) == []
        time.sleep(0.6)
        assert [i.id for i in queue.claim(engine, "live-worker", limit=5)] == [1]
        with session_scope(factory) as session:
            assert queue.mark_done(session, 1, "live-worker", orthanc_id="x", deid_sop_instance_uid="2.25.1")
        with session_scope(factory) as session:
            assert session.get(IngestItem, 1).status == ItemStatus.DONE  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_rows_of_a_dead_worker_process_on_this_host_are_requeued_at_once(db_url: str, db_session: Session) -> None:
    _fill(db_session, 1)
    engine = create_db_engine(db_url)
    factory = make_sessionmaker(engine)
    try:
        dead_owner = f"{queue.HOSTNAME}:999999:abcd"  # no such pid
        assert queue.claim(engine, dead_owner, limit=1, lease_s=3600)
        with session_scope(factory) as session:
            assert queue.release_dead_owners(session) == 1
        assert [i.id for i in queue.claim(engine, "new", limit=1)] == [1]
    finally:
        engine.dispose()


def test_claim_statement_uses_skip_locked_on_postgresql() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from pacslabel.db.base import utcnow

    statement = queue.claim_statement("w", 5, 60, utcnow())
    assert "FOR UPDATE SKIP LOCKED" in str(statement.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in str(statement.compile(dialect=sqlite.dialect()))  # BEGIN IMMEDIATE instead
