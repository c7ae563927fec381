"""A minimal in-test catalog and project files, shared by the project and task tests."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.db.base import utcnow
from pacslabel.projects.models import Project
from pacslabel.projects.service import apply_project_file
from pacslabel.users import service as user_service
from pacslabel.users.models import User

PASSWORD = "a long enough password"


def _uid(*parts: str) -> str:
    return "2.25." + str(int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:24], 16))


def add_series(session: Session, patient: str, study: str, series: str, *, route: str = "prostate-mri",
               modality: str = "MR", body_part: str = "PROSTATE", manufacturer: str | None = "Siemens",
               description: str = "t2_tse_tra", instances: int = 20, age_s: float = 3600.0) -> CatalogSeries:
    """One de-identified series (patient and study created on first use)."""
    at = utcnow() - timedelta(seconds=age_s)
    patient_row = session.scalar(select(CatalogPatient).where(CatalogPatient.pseudonym == patient))
    if patient_row is None:
        patient_row = CatalogPatient(pseudonym=patient, first_received_at=at)
        session.add(patient_row)
        session.flush()
    study_uid = _uid(patient, study)
    study_row = session.scalar(select(CatalogStudy).where(CatalogStudy.study_instance_uid == study_uid))
    if study_row is None:
        study_row = CatalogStudy(study_instance_uid=study_uid, patient_id=patient_row.id, first_received_at=at)
        session.add(study_row)
        session.flush()
    row = CatalogSeries(series_instance_uid=_uid(patient, study, series), study_id=study_row.id,
                        modality=modality, body_part=body_part, manufacturer=manufacturer, description=description,
                        route=route, instance_count=instances, first_received_at=at, last_received_at=at)
    session.add(row)
    session.flush()
    return row


def project_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": "test-project",
        "name": "Test project",
        "selection": {"item": "study", "routes": ["prostate-mri"], "modalities": ["MR"]},
        "protocol": {
            "instructions": "Outline every lesion.",
            "segments": [{
                "label": "lesion",
                "category": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                             "CodeMeaning": "Morphologically Altered Structure"},
                "type": {"CodeValue": "108369006", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Neoplasm"},
                "color": "#ff0000"}],
            "exclusion_reasons": ["wrong image", "artifact"],
            "skip_reasons": ["images do not load"],
        },
        "split": {"ratios": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "readers_per_split": {"train": 1, "validation": 3, "test": 5},
        "review": {"fractions": {"train": 0.0, "validation": 0.0, "test": 0.0}},
    }
    for key, value in overrides.items():
        data[key] = value
    return data


def apply_dict(session: Session, data: dict[str, Any], actor: str = "tester") -> Project:
    return apply_project_file(session, yaml.safe_dump(data, sort_keys=False), actor).project


def make_user(session: Session, name: str, role: str = "annotator") -> User:
    return user_service.create_user(session, name, role, PASSWORD)
