"""Review results: reviewers' decisions on reads, consensus results, the final label of each item, the
comment thread of a task, and ground truth imported from clinical outcomes.

`review_decisions`, `consensus_results`, `task_comments` and the ground truth tables are append-only (the
history of how a label came about is part of the data set's provenance); `final_labels` holds one current row
per item and is replaced, not appended.

A reviewer's fix is not a table of its own: it is an `annotation_versions` row of the *read* task (in the
read's own SEG series, so its reader sees it and the blinding rules stay per task), authored by the reviewer
(author_role "reviewer") with `predecessor_id` pointing at the reader's version.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class FinalSource(StrEnum):
    CONSENSUS = "consensus"
    SINGLE_READ = "single_read"
    ARBITRATION = "arbitration"
    GROUND_TRUTH = "ground_truth"  # imported clinical outcomes; wins over every other source


class ConsensusMethod(StrEnum):
    MAJORITY = "majority"
    STAPLE = "staple"


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
    # Each input's agreement with the consensus: {annotation_version_id (text): {label (text): Dice}}.
    reader_agreement: Mapped[dict[str, dict[str, float]] | None] = mapped_column(JSON)
    # Reader id (annotation version id, text) -> weight as used (normalised), None for equal weights.
    reader_weights: Mapped[dict[str, float] | None] = mapped_column(JSON)
    # The method not chosen, for comparison: {"method", "dice_to_consensus": {label: Dice}}.
    comparison: Mapped[dict[str, object] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FinalLabel(Base):
    __tablename__ = "final_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("project_items.id"), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # FinalSource
    annotation_version_id: Mapped[int | None] = mapped_column(ForeignKey("annotation_versions.id"))
    consensus_id: Mapped[int | None] = mapped_column(ForeignKey("consensus_results.id"))
    # Ground truth: the import whose rows decided this item (the rows are in ground_truth_answers).
    ground_truth_import_id: Mapped[int | None] = mapped_column(ForeignKey("ground_truth_imports.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskComment(Base):
    """One message of a task's thread between its reader and the item's reviewers (append-only)."""

    __tablename__ = "task_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroundTruthImport(Base):
    """One imported outcomes file (the file itself is not kept: its name, digest, importer and rows are)."""

    __tablename__ = "ground_truth_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    importer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    row_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroundTruthAnswer(Base):
    """One answer of one item from an import, with the file line it came from. The key the row used is kept
    as its kind ("patient" / "accession") and the pseudonymous patient it resolved to, never an original
    accession number."""

    __tablename__ = "ground_truth_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("ground_truth_imports.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("project_items.id"), index=True)
    question: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str] = mapped_column(String(255))
    line: Mapped[int] = mapped_column(Integer)  # 1-based line of the file (line 1 is the header)
    key_kind: Mapped[str] = mapped_column(String(16))
    patient_pseudonym: Mapped[str] = mapped_column(String(64))
