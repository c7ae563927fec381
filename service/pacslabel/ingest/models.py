"""Queue rows for spooled instances and quarantine records.

Nothing here holds PHI: the original SOP Instance UID is kept only as a keyed HMAC (for de-duplication and
support questions), AE titles and SOP class UIDs are not patient data, reasons are written by us.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class ItemStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    QUARANTINED = "quarantined"


class QuarantineStatus:
    HELD = "held"
    RELEASED = "released"
    DELETED = "deleted"


class IngestItem(Base):
    """One received instance: its spool file and where it is on the way to Orthanc."""

    __tablename__ = "ingest_items"
    __table_args__ = (Index("ix_ingest_items_status_not_before", "status", "not_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.QUEUED)
    spool_name: Mapped[str] = mapped_column(String(255))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_uid_hmac: Mapped[str] = mapped_column(String(64), index=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    source_host: Mapped[str | None] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(255))
    done_at: Mapped[datetime | None] = mapped_column(index=True)
    # De-identified identifiers (not PHI): where the instance landed.
    orthanc_id: Mapped[str | None] = mapped_column(String(64))
    deid_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))


class QuarantineItem(Base):
    """A poison instance kept aside (file under quarantine/), never forwarded unless an admin releases it."""

    __tablename__ = "ingest_quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("ingest_items.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=QuarantineStatus.HELD, index=True)
    reason: Mapped[str] = mapped_column(String(255))
    file_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(64))
