"""Projects, their protocol versions, items (a study or series of the catalog), patient splits and the
de-identified clinical context per patient."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    # The validated project file (canonical JSON); `definition_sha256` makes re-applying a no-op.
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    definition_sha256: Mapped[str] = mapped_column(String(64))
    protocol_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProtocolVersion(Base):
    """Every protocol a project ever had; tasks keep the version they were read under."""

    __tablename__ = "project_protocol_versions"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_project_protocol_versions_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[dict[str, Any]] = mapped_column(JSON)
    protocol_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PatientSplit(Base):
    """The split of a pseudonymous patient in a project: assigned once, never changed (a patient who moved
    from test to train would leak test data into training)."""

    __tablename__ = "project_patient_splits"
    __table_args__ = (UniqueConstraint("project_id", "patient_id", name="uq_project_patient_splits_patient"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("catalog_patients.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    stratum: Mapped[str | None] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectItem(Base):
    """One reading unit: a study (all its matching series) or one series."""

    __tablename__ = "project_items"
    __table_args__ = (UniqueConstraint("project_id", "unit_uid", name="uq_project_items_unit"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    unit: Mapped[str] = mapped_column(String(8))  # study | series
    unit_uid: Mapped[str] = mapped_column(String(64))  # de-identified Study or Series Instance UID
    study_id: Mapped[int] = mapped_column(ForeignKey("catalog_studies.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("catalog_patients.id"), index=True)
    series_uids: Mapped[list[str]] = mapped_column(JSON)
    split: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(16))  # calibration | first_batch | continuous
    # Keyed hash: the serving order (not arrival order, which could hint at clinical context).
    order_key: Mapped[str] = mapped_column(String(64))
    needs_review: Mapped[bool] = mapped_column(default=False)
    released_at: Mapped[datetime | None] = mapped_column(index=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClinicalRecord(Base):
    """De-identified clinical context of one patient in one project (age bracket, never the age)."""

    __tablename__ = "project_clinical_records"
    __table_args__ = (UniqueConstraint("project_id", "patient_id", name="uq_project_clinical_records_patient"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("catalog_patients.id"), index=True)
    age_bracket: Mapped[str | None] = mapped_column(String(16))
    sex: Mapped[str | None] = mapped_column(String(1))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = ["ClinicalRecord", "PatientSplit", "Project", "ProjectItem", "ProtocolVersion"]
