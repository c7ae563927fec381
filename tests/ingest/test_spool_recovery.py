"""Start-up recovery: partial files removed, rows without files handled, files without rows re-queued."""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import select

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.ingest import queue
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.ingest.recovery import recover_spool
from pacslabel.ingest.routing import RouteRule, RoutingTable
from pacslabel.ingest.spool import Spool
from pacslabel.settings import Settings
from tests.fixtures.orthanc import ct_dataset, dataset_bytes


def test_recovery_removes_partials_and_done_files_and_requeues_files_without_rows(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    spool = Spool(settings.spool_dir)
    dead_pid = 999999
    (settings.spool_dir / f"abc.{dead_pid}.part").write_bytes(b"half")
    live_part = settings.spool_dir / f"def.{os.getpid()}.part"  # a live writer's file is left alone
    live_part.write_bytes(b"writing")
    orphan = spool.write([dataset_bytes(ct_dataset())], "CT1", "PACSLABEL")  # crash between rename and commit
    done = spool.write([dataset_bytes(ct_dataset())], "CT1", "PACSLABEL")  # crash between commit and unlink
    queued = spool.write([dataset_bytes(ct_dataset())], "CT1", "PACSLABEL")
    engine = create_db_engine(settings.effective_database_url)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as session:
            for spooled, status in ((done, ItemStatus.DONE), (queued, ItemStatus.QUEUED)):
                item_id = queue.enqueue(session, spool_name=spooled.name, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                                        sop_uid_hmac="0" * 64, calling_ae="CT1", called_ae="PACSLABEL",
                                        source_host=None, route="default", size_bytes=spooled.size)
                item = session.get(IngestItem, item_id)
                assert item is not None
                item.status = status
        routing = RoutingTable(routes=(RouteRule(route="lung", calling="CT1"),))
        report = recover_spool(spool, settings.quarantine_dir, factory, routing, b"k" * 16)
        assert (report.partial_removed, report.done_removed, report.orphans_requeued, report.pending) == (1, 1, 1, 1)
        assert live_part.exists() and not list(settings.spool_dir.glob(f"*.{dead_pid}.part"))
        assert not done.path.exists() and orphan.path.exists() and queued.path.exists()
        with factory() as session:
            row = session.scalar(select(IngestItem).where(IngestItem.spool_name == orphan.name))
            assert row is not None and row.status == ItemStatus.QUEUED
            assert (row.calling_ae, row.route) == ("CT1", "lung")  # route rebuilt from the AE titles in the name
            assert row.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and len(row.sop_uid_hmac) == 64
    finally:
        spool.close()
        engine.dispose()
