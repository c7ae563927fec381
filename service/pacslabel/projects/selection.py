"""Which catalog series belong to a project, grouped into reading units. Pure functions over
`SeriesCandidate`, so the rules are testable without a database and the catalog coupling is one query
(`repository.series_candidates`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from pacslabel.projects.schema import Selection


@dataclass(frozen=True)
class SeriesCandidate:
    """One de-identified catalog series with what selection and splitting need."""

    series_id: int
    series_uid: str
    study_id: int
    study_uid: str
    patient_id: int
    patient_pseudonym: str
    route: str
    modality: str | None
    body_part: str | None
    manufacturer: str | None
    description: str | None
    instance_count: int
    last_received_at: datetime


@dataclass
class Unit:
    """A reading unit (study or series) built from matching candidates."""

    kind: str
    uid: str
    study_id: int
    patient_id: int
    patient_pseudonym: str
    series: list[SeriesCandidate] = field(default_factory=list)

    @property
    def series_uids(self) -> list[str]:
        return sorted(s.series_uid for s in self.series)

    @property
    def manufacturer(self) -> str | None:
        names = sorted(s.manufacturer for s in self.series if s.manufacturer)
        return names[0] if names else None


def matches(selection: Selection, candidate: SeriesCandidate) -> bool:
    if selection.routes and candidate.route not in selection.routes:
        return False
    if selection.modalities and (candidate.modality or "").upper() not in selection.modalities:
        return False
    if selection.body_parts and (candidate.body_part or "").upper() not in selection.body_parts:
        return False
    if candidate.instance_count < selection.min_instances:
        return False
    description = candidate.description or ""
    if selection.series_description and not any(re.search(p, description)
                                                for p in selection.series_description):
        return False
    return not any(re.search(p, description) for p in selection.exclude_series_description)


def select_units(selection: Selection, candidates: list[SeriesCandidate]) -> list[Unit]:
    """Group matching series into units (one per study or per series), in a stable order."""
    units: dict[str, Unit] = {}
    for candidate in candidates:
        if not matches(selection, candidate):
            continue
        uid = candidate.study_uid if selection.item == "study" else candidate.series_uid
        unit = units.get(uid)
        if unit is None:
            unit = units[uid] = Unit(selection.item, uid, candidate.study_id, candidate.patient_id,
                                     candidate.patient_pseudonym)
        unit.series.append(candidate)
    return [units[uid] for uid in sorted(units)]
