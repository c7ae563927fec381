"""Start-up reconciliation of the spool with the queue (run by the SCP before it listens).

- ``*.part`` of a dead writer: never acknowledged (the success status goes out after the rename and the commit),
  removed; the sender got no success and sends again.
- a file whose row is queued/running: left alone, the queue owns it (a dead worker's lease runs out).
- a file whose row is done: the worker died between its commit and the unlink; removed.
- a file whose row is quarantined: the worker died between its commit and the move; moved now.
- a file without a row: written and renamed, but the row's commit never happened (crash, or a power loss that
  dropped an un-synced SQLite commit). It may have been acknowledged in the power-loss case, so it is
  **re-queued**, never deleted: Orthanc de-duplicates by SOP Instance UID and de-identification is
  deterministic, so a redundant copy is harmless while a deleted acknowledged instance would be lost.

One SCP process owns a spool directory (an exclusive lock file), so no other writer can be between rename and
commit while this runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.db import session_scope
from pacslabel.ingest import queue
from pacslabel.ingest.models import ItemStatus
from pacslabel.ingest.routing import RoutingTable
from pacslabel.ingest.spool import Spool, ae_titles_from_name
from pacslabel.settings import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    partial_removed: int = 0
    done_removed: int = 0
    quarantine_moved: int = 0
    orphans_requeued: int = 0
    pending: int = 0


def lock_spool(root: Path) -> int:
    """Hold an exclusive lock on the spool for this process's lifetime (released by the kernel on exit)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".scp.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(f"another storage SCP process already uses the spool {root}") from None
    return fd


def _header(path: Path) -> tuple[str, str]:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 — unreadable: the worker quarantines it with a reason
        return "", ""


def remove_done_files(spool: Spool, factory: sessionmaker[Session]) -> int:
    """Remove spool files whose row is done: a worker killed between its commit and its unlinks leaves them.

    Safe while the SCP runs (done is final, and files without a row are not touched), so every worker runs it
    at start, not only the SCP's start-up recovery.
    """
    names = spool.final_names()
    with session_scope(factory) as session:
        statuses = queue.spool_names_with_rows(session, names)
    done = [name for name in names if statuses.get(name) == ItemStatus.DONE]
    for name in done:
        spool.remove(name)
    return len(done)


def recover_spool(spool: Spool, quarantine_dir: Path, factory: sessionmaker[Session], routing: RoutingTable,
                  key: bytes) -> RecoveryReport:
    report = RecoveryReport(partial_removed=spool.remove_stale_parts())
    names = spool.final_names()
    with session_scope(factory) as session:
        statuses = queue.spool_names_with_rows(session, names)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        status = statuses.get(name)
        if status == ItemStatus.DONE:
            spool.remove(name)
            report.done_removed += 1
        elif status == ItemStatus.QUARANTINED:
            try:
                os.replace(spool.path(name), quarantine_dir / name)
                report.quarantine_moved += 1
            except FileNotFoundError:
                pass
        elif status is None:
            path = spool.path(name)
            sop_class, sop_uid = _header(path)
            calling, called = ae_titles_from_name(name)
            with session_scope(factory) as session:
                queue.enqueue(session, spool_name=name, sop_class_uid=sop_class, sop_uid_hmac=queue.sop_uid_digest(
                    key, sop_uid), calling_ae=calling, called_ae=called, source_host=None,
                    route=routing.route_for(calling, called), size_bytes=path.stat().st_size)
            report.orphans_requeued += 1
        else:
            report.pending += 1
    logger.info("spool recovery: %d partial removed, %d done removed, %d moved to quarantine, "
                "%d re-queued without a row, %d pending", report.partial_removed, report.done_removed,
                report.quarantine_moved, report.orphans_requeued, report.pending)
    return report
