"""De-identified patients, studies, series and instances as they landed in Orthanc. No PHI: every identifier
here is the pseudonymous one written by the de-identification engine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class CatalogPatient(Base):
    __tablename__ = "catalog_patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogStudy(Base):
    __tablename__ = "catalog_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("catalog_patients.id"), index=True)
    orthanc_id: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))  # shifted date, YYYYMMDD
    description: Mapped[str | None] = mapped_column(String(255))
    # The de-identified AccessionNumber: a keyed HMAC of the original (deid.pseudonyms, key from settings), so
    # an admin holding an original accession can find the study (review.accession_lookup); never the original.
    accession_key: Mapped[str | None] = mapped_column(String(64), index=True)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogSeries(Base):
    __tablename__ = "catalog_series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("catalog_studies.id"), index=True)
    orthanc_id: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    body_part: Mapped[str | None] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    institution: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    source_ae: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str] = mapped_column(String(64), index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CatalogInstance(Base):
    __tablename__ = "catalog_instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("catalog_series.id"), index=True)
    orthanc_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
