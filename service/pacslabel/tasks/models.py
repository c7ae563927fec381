"""Reading tasks. The database, not only Python, keeps assignment correct under concurrent "Next" presses:

- `uq_tasks_item_reader_purpose`: a reader never holds two tasks of the same purpose on one item (a repeat is
  another purpose, so it is the one way to read an item twice);
- `uq_tasks_item_purpose_slot`: reading slot k of an item is held by at most one task. Slot numbers are taken
  from 0..readers_per_split-1, so an item never gets more readers than its split asks for. Tasks that do not
  fill a slot (calibration reads by everyone, repeats, skipped reads) have slot NULL, which a unique
  constraint does not compare.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("item_id", "reader_id", "purpose", name="uq_tasks_item_reader_purpose"),
        UniqueConstraint("item_id", "purpose", "slot", name="uq_tasks_item_purpose_slot"),
        Index("ix_tasks_reader_status", "reader_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("project_items.id"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    purpose: Mapped[str] = mapped_column(String(16))
    slot: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    protocol_version: Mapped[int] = mapped_column(Integer)
    # A repeat is served only once its reader has completed this many reads in the project.
    due_after_reads: Mapped[int | None] = mapped_column(Integer)
    assigned_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    skip_reason: Mapped[str | None] = mapped_column(String(255))
    exclusion_reason: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
