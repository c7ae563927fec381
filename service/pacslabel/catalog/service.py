"""Recording de-identified instances in the catalog as they land in Orthanc, and series completeness.

Only de-identified values are recorded: the pseudonymous Patient ID and the remapped UIDs the engine wrote,
and descriptive attributes read from the *de-identified* data set (`DeidentifiedInstance.attributes`), so
whatever the profile removed is simply absent here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from pacslabel.catalog import repository
from pacslabel.catalog.models import CatalogSeries
from pacslabel.db.base import utcnow

# attributes-dict keys we look for (DICOM keywords; snake_case accepted too), and their column lengths.
_SERIES_FIELDS = {
    "modality": ("Modality", 16),
    "body_part": ("BodyPartExamined", 64),
    "manufacturer": ("Manufacturer", 64),
    "model": ("ManufacturerModelName", 64),
    "institution": ("InstitutionName", 64),
    "description": ("SeriesDescription", 255),
}
_STUDY_FIELDS = {"study_date": ("StudyDate", 8), "description": ("StudyDescription", 255)}


def _attribute(attributes: dict[str, Any], keyword: str, snake: str, length: int) -> str | None:
    value = attributes.get(keyword, attributes.get(snake))
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text[:length] or None


@dataclass(frozen=True)
class LandedInstance:
    """What the worker knows about one de-identified instance stored in Orthanc."""

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    attributes: dict[str, Any]
    orthanc_id: str | None
    series_orthanc_id: str | None
    study_orthanc_id: str | None
    route: str
    source_ae: str
    received_at: datetime


def record_instance(session: Session, landed: LandedInstance) -> bool:
    at = landed.received_at
    patient = repository.upsert_patient(session, landed.patient_id, at)
    study_values = {name: _attribute(landed.attributes, kw, name, n) for name, (kw, n) in _STUDY_FIELDS.items()}
    study = repository.upsert_study(session, landed.study_instance_uid, patient,
                                    {**study_values, "orthanc_id": landed.study_orthanc_id}, at)
    series_values = {name: _attribute(landed.attributes, kw, name, n) for name, (kw, n) in _SERIES_FIELDS.items()}
    series = repository.upsert_series(session, landed.series_instance_uid, study, {
        **series_values, "orthanc_id": landed.series_orthanc_id, "sop_class_uid": landed.sop_class_uid,
        "source_ae": landed.source_ae[:16], "route": landed.route}, at)
    return repository.add_instance(session, landed.sop_instance_uid, series, landed.orthanc_id, at)


def is_complete(series: CatalogSeries, stable_s: float, now: datetime | None = None) -> bool:
    """A series is complete when no instance arrived for `stable_s` seconds."""
    return (now or utcnow()) - series.last_received_at >= timedelta(seconds=stable_s)


def series_overview(session: Session, stable_s: float, *, route: str | None = None) -> list[dict[str, Any]]:
    now = utcnow()
    return [{
        "series_instance_uid": s.series_instance_uid, "modality": s.modality, "body_part": s.body_part,
        "manufacturer": s.manufacturer, "model": s.model, "institution": s.institution,
        "description": s.description, "instances": s.instance_count, "route": s.route, "source_ae": s.source_ae,
        "first_received_at": s.first_received_at.isoformat(), "last_received_at": s.last_received_at.isoformat(),
        "complete": is_complete(s, stable_s, now),
    } for s in repository.list_series(session, route=route)]
