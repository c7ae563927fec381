"""Annotation versions: one row per stored SEG or SR instance (architecture invariant 3).

The table is append-only. A save inserts one row and, in the same transaction, fills ``orthanc_id`` once
the instance is in Orthanc; nothing updates or deletes a row afterwards. The DICOM object itself carries the
same facts (author, time, predecessor, InstanceNumber = version), so the chain survives without this table.

The access policy (dicomweb/access) reads this model by these names: keep them.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class AnnotationModality(StrEnum):
    SEG = "SEG"
    SR = "SR"


class AnnotationOrigin(StrEnum):
    OHIF = "ohif"  # STOW-RS through the gateway (OHIF or any DICOMweb client)
    API = "api"  # built by pacslabel from a label array or a JSON report (POST /api/tasks/{id}/annotations)


class AnnotationVersion(Base):
    __tablename__ = "annotation_versions"
    __table_args__ = (
        # Two concurrent saves can never both become version n+1 of one task's SEG (or SR).
        UniqueConstraint("task_id", "modality", "version", name="uq_annotation_versions_task_modality_version"),
        Index("ix_annotation_versions_series", "study_instance_uid", "series_instance_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))  # the task's own SEG or SR series
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(8))  # AnnotationModality
    version: Mapped[int] = mapped_column(Integer)  # 1..n per (task, modality) = the object's InstanceNumber
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    author_role: Mapped[str] = mapped_column(String(16))  # annotator | reviewer | arbiter (as stamped)
    predecessor_id: Mapped[int | None] = mapped_column(ForeignKey("annotation_versions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    origin: Mapped[str] = mapped_column(String(8))  # AnnotationOrigin
    sha256: Mapped[str] = mapped_column(String(64))  # of the Part-10 bytes stored in Orthanc
    byte_size: Mapped[int] = mapped_column(Integer)
    repairs: Mapped[list[str]] = mapped_column(JSON, default=list)  # what the gateway changed (OHIF repairs)
    orthanc_id: Mapped[str | None] = mapped_column(String(64))


def task_series_uid(study_instance_uid: str, task_id: int, modality: AnnotationModality | str) -> str:
    """The task's own annotation series UID for one modality, derived, so it is the same in every process.

    A ``2.25`` UUID-derived UID (PS3.5 B.2) from a SHA-256 of the study, the task and the modality: one SEG
    series and one SR series per task, disjoint from every other task's (another task on the same study has
    another id) and from the source series (those come from de-identification, never from this hash).
    """
    digest = hashlib.sha256(f"pacslabel/annotation-series/{study_instance_uid}/{task_id}/{modality}".encode())
    return f"2.25.{uuid.UUID(bytes=digest.digest()[:16]).int}"


__all__ = ["AnnotationModality", "AnnotationOrigin", "AnnotationVersion", "task_series_uid"]
