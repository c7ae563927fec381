"""Recording de-identified instances in the catalog as they land in Orthanc, and series completeness.

Only de-identified values are recorded: the pseudonymous Patient ID and the remapped UIDs the engine wrote,
and descriptive attributes read from the *de-identified* data set (`DeidentifiedInstance.attributes`), so
whatever the profile removed is simply absent here.
"""

from __future__ import annotations

from collections.abc import Sequence
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
_STUDY_FIELDS = {"study_date": ("StudyDate", 8), "description": ("StudyDescription", 255),
                 "accession_key": ("AccessionNumber", 64)}  # the keyed HMAC the engine wrote (see CatalogStudy)


def _attribute(attributes: dict[str, Any], keyword: str, snake: str, length: int) -> str | None:
    value = attributes.get(keyword, attributes.get(snake))
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text[:length] or None


def accession_key(attributes: dict[str, Any]) -> str | None:
    """The ``accession_key`` the catalogue records for a de-identified data set's attributes (its
    AccessionNumber, stripped and cut to the column; None when empty)."""
    keyword, length = _STUDY_FIELDS["accession_key"]
    return _attribute(attributes, keyword, "accession_key", length)


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
    """Record one instance; True if it is new (a redo after a crash does not count twice)."""
    return record_instances(session, [landed]) == 1


def record_instances(session: Session, landed: Sequence[LandedInstance]) -> int:
    """Record a worker's batch in the caller's transaction; returns how many instances were new.

    A batch is usually one series: patient, study and series are upserted once per distinct UID (the first
    instance's attributes win, as with one call per instance), and each series gets one counting UPDATE.
    """
    patients: dict[str, int] = {}
    studies: dict[str, int] = {}
    series_ids: dict[str, int] = {}
    added: dict[int, list[datetime]] = {}
    for item in landed:
        at = item.received_at
        if item.patient_id not in patients:
            patients[item.patient_id] = repository.upsert_patient(session, item.patient_id, at)
        if item.study_instance_uid not in studies:
            values = {name: _attribute(item.attributes, kw, name, n) for name, (kw, n) in _STUDY_FIELDS.items()}
            studies[item.study_instance_uid] = repository.upsert_study(
                session, item.study_instance_uid, patients[item.patient_id],
                {**values, "orthanc_id": item.study_orthanc_id}, at)
        if item.series_instance_uid not in series_ids:
            values = {name: _attribute(item.attributes, kw, name, n) for name, (kw, n) in _SERIES_FIELDS.items()}
            series_ids[item.series_instance_uid] = repository.upsert_series(
                session, item.series_instance_uid, studies[item.study_instance_uid], {
                    **values, "orthanc_id": item.series_orthanc_id, "sop_class_uid": item.sop_class_uid,
                    "source_ae": item.source_ae[:16], "route": item.route}, at)
        series_id = series_ids[item.series_instance_uid]
        if repository.insert_instance(session, item.sop_instance_uid, series_id, item.orthanc_id, at):
            added.setdefault(series_id, []).append(at)
    for series_id, times in added.items():
        repository.count_new_instances(session, series_id, len(times), min(times), max(times))
    return sum(len(times) for times in added.values())


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
