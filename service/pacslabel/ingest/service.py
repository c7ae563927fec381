"""Ingest monitoring and quarantine administration (used by the CLI and the /api/ingest routes).

Every admin action records an audit event. Nothing returned here holds PHI: row ids, AE titles, SOP class
UIDs, routes, sizes, times and our own reasons.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from pacslabel.audit.service import record as audit
from pacslabel.db.base import utcnow
from pacslabel.errors import Conflict, NotFound
from pacslabel.ingest import repository
from pacslabel.ingest.models import IngestItem, ItemStatus, QuarantineItem, QuarantineStatus
from pacslabel.settings import Settings


def status_report(session: Session) -> dict[str, Any]:
    by_status = repository.counts_by_status(session)
    oldest = repository.oldest_waiting(session)
    return {
        "queue_depth": by_status.get(ItemStatus.QUEUED, 0) + by_status.get(ItemStatus.RUNNING, 0),
        "by_status": by_status,
        "per_route": repository.counts_by_route(session),
        "done_last_5_min_per_minute": round(repository.throughput_per_minute(session), 1),
        "oldest_waiting_received_at": oldest.isoformat() if oldest else None,
        "last_errors": [{"item_id": item.id, "route": item.route, "attempts": item.attempts,
                         "error": item.last_error} for item in repository.last_errors(session)],
        "quarantine_held": repository.held_quarantine_count(session),
        "quarantine": [quarantine_dict(q) for q in repository.quarantine_list(session, limit=20)],
    }


def quarantine_dict(record: QuarantineItem) -> dict[str, Any]:
    return {"id": record.id, "item_id": record.item_id, "status": record.status, "reason": record.reason,
            "created_at": record.created_at.isoformat(),
            "resolved_at": record.resolved_at.isoformat() if record.resolved_at else None,
            "resolved_by": record.resolved_by}


def _held(session: Session, quarantine_id: int) -> QuarantineItem:
    record = repository.quarantine_item(session, quarantine_id)
    if record is None:
        raise NotFound(f"quarantine item {quarantine_id} does not exist")
    if record.status != QuarantineStatus.HELD:
        raise Conflict(f"quarantine item {quarantine_id} is already {record.status}")
    return record


def release(session: Session, settings: Settings, quarantine_id: int, actor: str) -> QuarantineItem:
    """Put the instance back into the queue (e.g. after a policy change); the worker tries it again."""
    record = _held(session, quarantine_id)
    source = settings.quarantine_dir / record.file_name
    if not source.exists():
        raise Conflict(f"quarantine item {quarantine_id} has no file left to release")
    # File back first: if the commit then fails, start-up recovery sees a quarantined row and moves it back.
    os.replace(source, settings.spool_dir / record.file_name)
    record.status = QuarantineStatus.RELEASED
    record.resolved_at = utcnow()
    record.resolved_by = actor
    session.execute(update(IngestItem).where(IngestItem.id == record.item_id)
                    .values(status=ItemStatus.QUEUED, not_before=utcnow(), attempts=0, last_error=None)
                    .execution_options(synchronize_session=False))
    audit(session, actor, "ingest.quarantine.release", "quarantine", record.id, item_id=record.item_id)
    session.flush()
    return record


def delete(session: Session, settings: Settings, quarantine_id: int, actor: str) -> QuarantineItem:
    """Delete the quarantined file for good (the row stays, as a record of what happened)."""
    record = _held(session, quarantine_id)
    record.status = QuarantineStatus.DELETED
    record.resolved_at = utcnow()
    record.resolved_by = actor
    audit(session, actor, "ingest.quarantine.delete", "quarantine", record.id, item_id=record.item_id)
    session.flush()
    session.commit()  # the decision is recorded before the file goes
    (settings.quarantine_dir / record.file_name).unlink(missing_ok=True)
    return record
