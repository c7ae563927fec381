"""Dataset snapshots, the data-flow log of what was delivered to whom, and a cache of source-object checksums.

A snapshot is immutable: its manifest bytes (canonical JSON) and their SHA-256 are written once, and every
download serves those bytes. ``data_flow_events`` is append-only: one row per creation and per download.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class DataFlowAction(StrEnum):
    CREATED = "created"
    DOWNLOADED = "downloaded"


class ExportFormat(StrEnum):
    MANIFEST = "manifest"
    DICOM_ZIP = "dicom-zip"
    DICOM_TREE = "dicom-tree"
    NIFTI_ZIP = "nifti-zip"
    NIFTI = "nifti"


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("project_id", "sequence", name="uq_snapshots_project_sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per project
    name: Mapped[str] = mapped_column(String(96), unique=True)  # "<project slug>@<sequence>"
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    include_test: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    manifest: Mapped[bytes] = mapped_column(LargeBinary)  # canonical JSON, UTF-8
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    item_count: Mapped[int] = mapped_column(Integer)
    object_count: Mapped[int] = mapped_column(Integer)


class DataFlowEvent(Base):
    __tablename__ = "data_flow_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    username: Mapped[str] = mapped_column(String(64))  # kept as written, for the log
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # DataFlowAction
    format: Mapped[str] = mapped_column(String(16))  # ExportFormat
    byte_count: Mapped[int | None] = mapped_column(BigInteger)  # None when a stream was not measured to its end
    client: Mapped[str | None] = mapped_column(String(128))  # "api <address> <user agent>" or "cli"


class SourceObjectHash(Base):
    """SHA-256 of a stored source instance, hashed once from Orthanc's bytes (instances never change there:
    Orthanc keeps the first copy of a SOP Instance UID)."""

    __tablename__ = "export_object_hashes"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    byte_size: Mapped[int] = mapped_column(Integer)
    hashed_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = ["DataFlowAction", "DataFlowEvent", "ExportFormat", "Snapshot", "SourceObjectHash"]
