"""The ingest job queue (table `ingest_items`): enqueue, exclusive claim with a lease, finish, retry, quarantine.

Claiming is exclusive on both backends: PostgreSQL locks the chosen rows with ``FOR UPDATE SKIP LOCKED`` so
concurrent workers pick different rows; SQLite has one writer at a time, taken at ``BEGIN IMMEDIATE``, so the
``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING`` runs alone. A claimed row carries a lease; a worker
killed mid-item stops renewing it and the row is claimed again after the lease runs out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, Update, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from pacslabel.db.base import utcnow
from pacslabel.ingest.models import IngestItem, ItemStatus, QuarantineItem

HOSTNAME = socket.gethostname()[:40]


def sop_uid_digest(key: bytes, sop_instance_uid: str) -> str:
    """Keyed digest of an original SOP Instance UID: lets us spot re-sends without storing the UID."""
    return hmac.new(key, b"ingest-sop-uid:" + sop_instance_uid.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def new_worker_id() -> str:
    # host:pid:random — the pid lets a restarted worker on the same host reclaim rows of a dead one at once.
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    spool_name: str
    sop_class_uid: str
    calling_ae: str
    called_ae: str
    route: str
    received_at: datetime
    attempts: int


# Built once: SQLAlchemy compiles it once and caches it; building `.values(...)` per call cost ~0.5 ms (profiled).
_ENQUEUE = insert(IngestItem.__table__).returning(IngestItem.__table__.c.id)


def enqueue(session: Session | Connection, *, spool_name: str, sop_class_uid: str, sop_uid_hmac: str,
            calling_ae: str, called_ae: str, source_host: str | None, route: str, size_bytes: int,
            received_at: datetime | None = None) -> int:
    """Queue one spooled instance; returns the row id. A Core INSERT: this runs once per C-STORE, before the
    sender gets its answer, and the ORM unit of work cost about 2 ms of that (profiled). Takes a Session or a
    Connection: the storage SCP reuses its connections (no pool checkout per C-STORE)."""
    now = received_at or utcnow()
    params = {
        "status": ItemStatus.QUEUED, "spool_name": spool_name, "sop_class_uid": sop_class_uid[:64],
        "sop_uid_hmac": sop_uid_hmac, "calling_ae": calling_ae[:16], "called_ae": called_ae[:16],
        "source_host": (source_host or None) and source_host[:64], "route": route[:64], "size_bytes": size_bytes,
        "received_at": now, "not_before": now, "attempts": 0,
    }
    return int(session.execute(_ENQUEUE, params).scalar_one())


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(IngestItem.status == ItemStatus.QUEUED, IngestItem.not_before <= now),
        and_(IngestItem.status == ItemStatus.RUNNING, IngestItem.lease_expires_at < now),
    )


def claim_statement(owner: str, limit: int, lease_s: float, now: datetime) -> Update:
    chosen = (select(IngestItem.id).where(_due(now)).order_by(IngestItem.id).limit(limit)
              .with_for_update(skip_locked=True))  # rendered on PostgreSQL; SQLite relies on BEGIN IMMEDIATE
    return (
        update(IngestItem)
        .where(IngestItem.id.in_(chosen.scalar_subquery()))
        .values(status=ItemStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=IngestItem.attempts + 1)
        .returning(IngestItem.id, IngestItem.spool_name, IngestItem.sop_class_uid, IngestItem.calling_ae,
                   IngestItem.called_ae, IngestItem.route, IngestItem.received_at, IngestItem.attempts)
        .execution_options(synchronize_session=False)
    )


def claim(engine: Engine, owner: str, *, limit: int = 8, lease_s: float = 60.0) -> list[ClaimedItem]:
    """Claim up to `limit` due rows for `owner`; each row is claimed by exactly one caller."""
    now = utcnow()
    with engine.connect() as conn:
        # Idle workers poll often. On SQLite, BEGIN IMMEDIATE takes the one write lock, which the storage SCP
        # needs for every queue row while a sender waits; a read (WAL: never blocks the writer) first means an
        # empty poll costs the SCP nothing.
        with conn.begin():
            if conn.execute(select(IngestItem.id).where(_due(now)).limit(1)).first() is None:
                return []
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            rows = conn.execute(claim_statement(owner, limit, lease_s, now)).all()
    return sorted((ClaimedItem(*row) for row in rows), key=lambda item: item.id)


def renew_lease(session: Session, owner: str, ids: list[int], lease_s: float) -> None:
    if ids:
        session.execute(update(IngestItem)
                        .where(IngestItem.id.in_(ids), IngestItem.lease_owner == owner,
                               IngestItem.status == ItemStatus.RUNNING)
                        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                        .execution_options(synchronize_session=False))


def mark_done(session: Session, item_id: int, owner: str, *, orthanc_id: str | None,
              deid_sop_instance_uid: str | None) -> bool:
    """Done only if we still hold the lease (a reclaimed row is finished by its new owner; both are harmless)."""
    result = session.execute(
        update(IngestItem)
        .where(IngestItem.id == item_id, IngestItem.status == ItemStatus.RUNNING)
        .values(status=ItemStatus.DONE, done_at=utcnow(), lease_owner=None, lease_expires_at=None,
                last_error=None, orthanc_id=orthanc_id, deid_sop_instance_uid=deid_sop_instance_uid)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


_MARK_DONE = (
    update(IngestItem.__table__)
    .where(IngestItem.__table__.c.id == bindparam("item_id"),
           IngestItem.__table__.c.status == ItemStatus.RUNNING)
    .values(status=ItemStatus.DONE, done_at=bindparam("done_at"), lease_owner=None, lease_expires_at=None,
            last_error=None, orthanc_id=bindparam("orthanc_id"),
            deid_sop_instance_uid=bindparam("deid_sop_instance_uid")))


def mark_many_done(session: Session, done: list[tuple[int, str | None, str | None]]) -> None:
    """`mark_done` for a batch, one executemany: (item id, Orthanc id, de-identified SOP Instance UID) each."""
    if done:
        now = utcnow()
        session.connection().execute(_MARK_DONE, [
            {"item_id": item_id, "done_at": now, "orthanc_id": orthanc_id, "deid_sop_instance_uid": deid_uid}
            for item_id, orthanc_id, deid_uid in done])


def release_for_retry(session: Session, ids: list[int], owner: str, delay_s: float, error: str) -> None:
    """Give claimed rows back to the queue, due again after `delay_s` (Orthanc down: nothing is dropped)."""
    if ids:
        session.execute(
            update(IngestItem)
            .where(IngestItem.id.in_(ids), IngestItem.lease_owner == owner, IngestItem.status == ItemStatus.RUNNING)
            .values(status=ItemStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                    not_before=utcnow() + timedelta(seconds=delay_s), last_error=error[:255])
            .execution_options(synchronize_session=False))


def release_dead_owners(session: Session) -> int:
    """Rows leased by a worker on this host whose process is gone go back to the queue now, not at lease end."""
    prefix = f"{HOSTNAME}:"
    rows = session.execute(select(IngestItem.id, IngestItem.lease_owner)
                           .where(IngestItem.status == ItemStatus.RUNNING,
                                  IngestItem.lease_owner.like(prefix + "%"))).all()
    dead = [row.id for row in rows if row.lease_owner and not _owner_alive(row.lease_owner)]
    if dead:
        session.execute(update(IngestItem).where(IngestItem.id.in_(dead), IngestItem.status == ItemStatus.RUNNING)
                        .values(status=ItemStatus.QUEUED, lease_owner=None, lease_expires_at=None)
                        .execution_options(synchronize_session=False))
    return len(dead)


def _owner_alive(owner: str) -> bool:
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def quarantine(session: Session, item_id: int, reason: str, file_name: str) -> QuarantineItem:
    session.execute(update(IngestItem).where(IngestItem.id == item_id)
                    .values(status=ItemStatus.QUARANTINED, lease_owner=None, lease_expires_at=None,
                            last_error=reason[:255])
                    .execution_options(synchronize_session=False))
    record = QuarantineItem(item_id=item_id, reason=reason[:255], file_name=file_name)
    session.add(record)
    session.flush()
    return record


def spool_names_with_rows(session: Session, names: list[str]) -> dict[str, str]:
    """status per spool file name, for the given names (recovery after a crash)."""
    found: dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        for name, status in session.execute(select(IngestItem.spool_name, IngestItem.status)
                                            .where(IngestItem.spool_name.in_(chunk))):
            found[name] = status
    return found
