"""Review results: reviewers' decisions on reads, consensus results, the final label of each item.

`review_decisions` and `consensus_results` are append-only (the history of how a label came about is part of
the data set's provenance); `final_labels` holds one current row per item and is replaced, not appended.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Float, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class FinalSource(StrEnum):
    CONSENSUS = "consensus"
    SINGLE_READ = "single_read"
    ARBITRATION = "arbitration"


class ReviewDecision(Base):
    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)  # the read task reviewed
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # Decision
    reason: Mapped[str | None] = mapped_column(String(255))  # a protocol rejection reason (reject only)
    comment: Mapped[str | None] = mapped_column(Text)
    # The SEG version the reviewer looked at (None when the read has no SEG, e.g. an excluded item).
    annotation_version_id: Mapped[int | None] = mapped_column(ForeignKey("annotation_versions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsensusResult(Base):
    __tablename__ = "consensus_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("project_items.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # "majority" | "staple"
    mean_dice: Mapped[dict[str, float]] = mapped_column(JSON)  # label number (as text) -> mean pairwise Dice
    min_dice: Mapped[float] = mapped_column(Float)  # lowest pairwise Dice over all labels and pairs
    # Every pair and label: {"label", "a", "b", "dice", "hd95_mm"} (a, b: annotation version ids; hd95 None if
    # not finite, e.g. one side empty).
    pairs: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    inputs: Mapped[list[int]] = mapped_column(JSON)  # annotation_versions ids, sorted
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))  # the consensus SEG in Orthanc
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))  # its series (one SEG per series)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FinalLabel(Base):
    __tablename__ = "final_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("project_items.id"), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # FinalSource
    annotation_version_id: Mapped[int | None] = mapped_column(ForeignKey("annotation_versions.id"))
    consensus_id: Mapped[int | None] = mapped_column(ForeignKey("consensus_results.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
