"""Read-side queries for ingest monitoring and the quarantine records."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pacslabel.db.base import utcnow
from pacslabel.ingest.models import IngestItem, ItemStatus, QuarantineItem, QuarantineStatus


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(IngestItem.status, func.count()).group_by(IngestItem.status)).all()
    return {status: int(count) for status, count in rows}


def counts_by_route(session: Session) -> dict[str, dict[str, int]]:
    rows = session.execute(select(IngestItem.route, IngestItem.status, func.count())
                           .group_by(IngestItem.route, IngestItem.status)).all()
    result: dict[str, dict[str, int]] = {}
    for route, status, count in rows:
        result.setdefault(route, {})[status] = int(count)
    return result


def done_since(session: Session, since: datetime) -> int:
    return int(session.scalar(select(func.count()).select_from(IngestItem)
                              .where(IngestItem.status == ItemStatus.DONE, IngestItem.done_at >= since)) or 0)


def oldest_waiting(session: Session) -> datetime | None:
    return session.scalar(select(func.min(IngestItem.received_at))
                          .where(IngestItem.status.in_([ItemStatus.QUEUED, ItemStatus.RUNNING])))


def last_errors(session: Session, limit: int = 10) -> list[IngestItem]:
    """Items waiting for a retry, with the reason (e.g. Orthanc unavailable)."""
    return list(session.scalars(select(IngestItem)
                                .where(IngestItem.last_error.is_not(None),
                                       IngestItem.status.in_([ItemStatus.QUEUED, ItemStatus.RUNNING]))
                                .order_by(IngestItem.id.desc()).limit(limit)))


def quarantine_list(session: Session, *, include_resolved: bool = False, limit: int = 500) -> list[QuarantineItem]:
    query = select(QuarantineItem).order_by(QuarantineItem.id.desc()).limit(limit)
    if not include_resolved:
        query = query.where(QuarantineItem.status == QuarantineStatus.HELD)
    return list(session.scalars(query))


def quarantine_item(session: Session, quarantine_id: int) -> QuarantineItem | None:
    return session.get(QuarantineItem, quarantine_id)


def held_quarantine_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(QuarantineItem)
                              .where(QuarantineItem.status == QuarantineStatus.HELD)) or 0)


def throughput_per_minute(session: Session, window: timedelta = timedelta(minutes=5)) -> float:
    return done_since(session, utcnow() - window) / (window.total_seconds() / 60)
