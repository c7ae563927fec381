"""Clinical context per pseudonymous patient: CSV import and what a reader may see beside the images.

Only de-identified context is kept: the age as a ten-year bracket (90 and over as one bracket, as HIPAA Safe
Harbor asks), sex, and the attributes the project file declares. Undeclared columns are refused rather than
stored, so a stray name or date column never lands in the database. Error messages name row and column but
never echo cell values.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput
from pacslabel.projects import repository
from pacslabel.projects.models import ClinicalRecord, Project, ProjectItem
from pacslabel.projects.schema import ClinicalAttribute, ProjectSpec
from pacslabel.projects.service import project_spec

PATIENT_COLUMN = "patient"
MAX_ERRORS = 20
SEXES = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}


def age_bracket(age: int) -> str:
    if age >= 90:
        return "90+"
    low = age // 10 * 10
    return f"{low}-{low + 9}"


@dataclass(frozen=True)
class ImportResult:
    rows: int
    patients: int


def _value(attribute: ClinicalAttribute, text: str) -> tuple[Any, str | None]:
    if attribute.type == "number":
        try:
            return float(text), None
        except ValueError:
            return None, "not a number"
    if attribute.type == "boolean":
        lowered = text.lower()
        if lowered in {"true", "yes", "1"}:
            return True, None
        if lowered in {"false", "no", "0"}:
            return False, None
        return None, "not true/false"
    if attribute.type == "choice":
        if text not in attribute.choices:
            return None, f"must be one of: {', '.join(attribute.choices)}"
        return text, None
    if len(text) > 255:
        return None, "longer than 255 characters"
    return text, None


def import_clinical_csv(session: Session, project: Project, text: str, actor: str,
                        filename: str = "clinical.csv") -> ImportResult:
    """Import (all or nothing) a CSV keyed by pseudonymous patient id: columns `patient`, optional `age`
    (years) and `sex` (M/F/O), and the project's declared clinical attributes."""
    spec = project_spec(project)
    declared = {a.name: a for a in spec.context.clinical_attributes}
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    errors: list[str] = []
    if PATIENT_COLUMN not in header:
        raise BadInput(f"{filename} row 1: needs a column {PATIENT_COLUMN!r} (pseudonymous patient id)")
    for name in header:
        if name not in declared and name not in (PATIENT_COLUMN, "age", "sex"):
            errors.append(f"{filename} row 1, column {name!r}: not declared in context.clinical_attributes "
                          f"of project {project.slug}")
    if len(set(header)) != len(header):
        errors.append(f"{filename} row 1: a column name appears twice")
    if errors:
        raise BadInput("\n".join(errors))
    rows = [(index, {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None},
             None in row) for index, row in enumerate(reader, start=2)]
    patients = repository.patients_by_pseudonym(session, [r[PATIENT_COLUMN] for _, r, _ in rows])
    parsed: dict[int, tuple[str | None, str | None, dict[str, Any]]] = {}
    for index, row, too_many in rows:
        where = f"{filename} row {index}"
        if too_many:
            errors.append(f"{where}: more cells than columns")
        patient_id = patients.get(row.get(PATIENT_COLUMN, ""))
        if not row.get(PATIENT_COLUMN):
            errors.append(f"{where}, column {PATIENT_COLUMN!r}: empty")
        elif patient_id is None:
            errors.append(f"{where}, column {PATIENT_COLUMN!r}: no such pseudonymous patient in the catalog")
        elif patient_id in parsed:
            errors.append(f"{where}, column {PATIENT_COLUMN!r}: patient appears on an earlier row too")
        bracket = sex = None
        if row.get("age"):
            try:
                age = int(row["age"])
                if not 0 <= age <= 130:
                    raise ValueError
                bracket = age_bracket(age)
            except ValueError:
                errors.append(f"{where}, column 'age': must be whole years 0..130")
        if row.get("sex"):
            sex = SEXES.get(row["sex"].upper())
            if sex is None:
                errors.append(f"{where}, column 'sex': must be M, F or O")
        attributes: dict[str, Any] = {}
        for name, attribute in declared.items():
            cell = row.get(name, "")
            if cell:
                value, problem = _value(attribute, cell)
                if problem:
                    errors.append(f"{where}, column {name!r}: {problem}")
                attributes[name] = value
        if patient_id is not None:
            parsed[patient_id] = (bracket, sex, attributes)
        if len(errors) >= MAX_ERRORS:
            errors.append("(stopped after 20 errors)")
            break
    if errors:
        raise BadInput("\n".join(errors))
    existing = {patient_id: repository.clinical_record(session, project.id, patient_id) for patient_id in parsed}
    now = utcnow()
    for patient_id, (bracket, sex, attributes) in parsed.items():
        row_record = existing[patient_id]
        if row_record is None:
            session.add(ClinicalRecord(project_id=project.id, patient_id=patient_id, age_bracket=bracket, sex=sex,
                                       attributes=attributes, imported_at=now))
        else:
            row_record.age_bracket, row_record.sex, row_record.attributes = bracket, sex, attributes
            row_record.imported_at = now
    session.flush()
    record(session, actor, "clinical_import", "project", project.slug, rows=len(rows), patients=len(parsed))
    return ImportResult(len(rows), len(parsed))


def reader_context(session: Session, project: Project, item: ProjectItem) -> dict[str, Any]:
    """What a reader may see beside the images of `item`: de-identified context only, as the project allows."""
    spec: ProjectSpec = project_spec(project)
    clinical = repository.clinical_record(session, project.id, item.patient_id)
    context: dict[str, Any] = {}
    if spec.context.show_age_bracket:
        context["age_bracket"] = clinical.age_bracket if clinical else None
    if spec.context.show_sex:
        context["sex"] = clinical.sex if clinical else None
    declared = {a.name: a for a in spec.context.clinical_attributes}
    values = clinical.attributes if clinical else {}
    context["clinical"] = [{"name": name, "value": values.get(name), "unit": attribute.unit}
                           for name, attribute in declared.items()]
    return context
