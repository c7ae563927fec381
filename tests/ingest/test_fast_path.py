"""The C-STORE fast path: hand-written file meta, shared directory fsync, reused queue connections, bulk finish
(the catalog side is in tests/catalog)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.ingest import queue, spool
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.ingest.routing import RoutingTable
from pacslabel.ingest.spool import Spool, part10_header
from pacslabel.settings import Settings


@pytest.mark.parametrize("sop_uid", ["1.2.3", "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
                                     "2.25.123456789012345678901234567890123"])
@pytest.mark.parametrize("transfer_syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80"])
def test_file_meta_is_byte_identical_to_pynetdicoms(sop_uid: str, transfer_syntax: str, tmp_path: Path) -> None:
    sop_class = "1.2.840.10008.5.1.4.1.1.66.7"
    expected = b"\x00" * 128 + b"DICM" + encode_file_meta(create_file_meta(
        sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_uid), transfer_syntax=UID(transfer_syntax)))
    header = part10_header(sop_class, sop_uid, transfer_syntax)
    assert header == expected
    path = tmp_path / "meta.dcm"
    path.write_bytes(header)
    meta = dcmread(path, force=True).file_meta
    assert (meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID) == (sop_uid, transfer_syntax)


def test_concurrent_writers_share_directory_fsyncs_and_each_waits_for_one_after_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Spool(tmp_path / "spool")
    sync = store._dir_sync
    real_fsync = os.fsync
    started_covering: list[int] = []  # renames done when each directory fsync started

    def slow_fsync(fd: int) -> None:
        if fd == store._dir_fd:
            started_covering.append(sync._renamed)
            time.sleep(0.01)
        real_fsync(fd)

    monkeypatch.setattr(spool.os, "fsync", slow_fsync)
    returned: list[tuple[int, int]] = []  # (own rename ticket, renames covered by the last finished fsync)
    original = sync.wait_durable

    def recording_wait(ticket: int) -> None:
        original(ticket)
        returned.append((ticket, sync._synced))

    monkeypatch.setattr(sync, "wait_durable", recording_wait)
    threads = [threading.Thread(target=lambda: [store.write([b"x" * 1000], "CT1", "P") for _ in range(5)])
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert len(store.final_names()) == 30
    assert all(ticket <= synced for ticket, synced in returned)  # never Success before its rename is durable
    assert len(started_covering) < 30  # concurrent writers shared fsyncs


def test_queue_connection_is_reused_and_dropped_after_a_database_error(
        make_settings: Callable[..., Settings]) -> None:
    from pacslabel.ingest.storage_scp import StorageSCP

    settings = make_settings()
    scp = StorageSCP(settings, routing=RoutingTable())
    values = {"spool_name": "a.dcm", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sop_uid_hmac": "0" * 64,
              "calling_ae": "CT1", "called_ae": "P", "source_host": None, "route": "default", "size_bytes": 1}
    try:
        first = scp._enqueue(**values)
        connection = scp._idle[-1]
        second = scp._enqueue(**{**values, "spool_name": "b.dcm"})
        assert second == first + 1 and list(scp._idle) == [connection]  # same connection, no pool checkout
        with pytest.raises(SQLAlchemyError):
            scp._enqueue(**{**values, "spool_name": None})  # NOT NULL violation
        assert not scp._idle and connection.closed  # a connection that failed is not reused
        assert scp._enqueue(**{**values, "spool_name": "c.dcm"}) > second
    finally:
        scp.stop()
    engine = create_db_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            names = list(session.scalars(select(IngestItem.spool_name).order_by(IngestItem.id)))
    finally:
        engine.dispose()
    assert names == ["a.dcm", "b.dcm", "c.dcm"]


def test_empty_poll_takes_no_claim_and_batch_finish_marks_every_row_done(db_url: str, db_session: Session) -> None:
    engine = create_db_engine(db_url)
    factory = make_sessionmaker(engine)
    try:
        assert queue.claim(engine, "w1") == []
        with session_scope(factory) as session:
            for n in range(3):
                queue.enqueue(session, spool_name=f"{n}.dcm", sop_class_uid="1.2", sop_uid_hmac="0" * 64,
                              calling_ae="CT1", called_ae="P", source_host=None, route="default", size_bytes=1)
        items = queue.claim(engine, "w1", limit=8)
        assert [item.spool_name for item in items] == ["0.dcm", "1.dcm", "2.dcm"]
        with session_scope(factory) as session:
            queue.mark_many_done(session, [(item.id, f"o{item.id}", f"2.25.{item.id}") for item in items])
        rows = list(db_session.scalars(select(IngestItem).order_by(IngestItem.id)))
        assert [(r.status, r.orthanc_id, r.lease_owner) for r in rows] == [
            (ItemStatus.DONE, f"o{r.id}", None) for r in rows]
        assert all(r.done_at is not None and r.deid_sop_instance_uid == f"2.25.{r.id}" for r in rows)
    finally:
        engine.dispose()


def test_worker_start_removes_files_of_done_rows_but_never_files_without_a_row(
        make_settings: Callable[..., Settings]) -> None:
    from pacslabel.ingest.recovery import remove_done_files

    settings = make_settings()
    store = Spool(settings.spool_dir)
    done, orphan = (store.write([b"x"], "CT1", "P") for _ in range(2))
    engine = create_db_engine(settings.effective_database_url)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as session:
            item_id = queue.enqueue(session, spool_name=done.name, sop_class_uid="1.2", sop_uid_hmac="0" * 64,
                                    calling_ae="CT1", called_ae="P", source_host=None, route="default",
                                    size_bytes=1)
            session.get_one(IngestItem, item_id).status = ItemStatus.DONE
        assert remove_done_files(store, factory) == 1
        assert not done.path.exists() and orphan.path.exists()  # the SCP may be between rename and commit
    finally:
        store.close()
        engine.dispose()


def test_running_worker_sweeps_files_of_items_done_after_it_started(make_settings: Callable[..., Settings]) -> None:
    import threading
    import time

    from pacslabel.ingest.worker import Worker, WorkerOptions

    settings = make_settings()
    store = Spool(settings.spool_dir)
    engine = create_db_engine(settings.effective_database_url)
    factory = make_sessionmaker(engine)
    # No item is ever queued, so the worker never talks to Orthanc: a placeholder client is enough.
    worker = Worker(settings, engine=engine, client=object(), options=WorkerOptions(sweep_interval_s=0.2))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # the start-up sweep has run; this file arrives later
        done = store.write([b"x"], "CT1", "P")
        with session_scope(factory) as session:
            item_id = queue.enqueue(session, spool_name=done.name, sop_class_uid="1.2", sop_uid_hmac="0" * 64,
                                    calling_ae="CT1", called_ae="P", source_host=None, route="default",
                                    size_bytes=1)
            session.get_one(IngestItem, item_id).status = ItemStatus.DONE
        deadline = time.monotonic() + 5
        while done.path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not done.path.exists()
    finally:
        stop.set()
        thread.join(timeout=5)
        worker.close()
        store.close()
        engine.dispose()
