"""Clinical context: CSV import keyed by pseudonymous patient id, errors naming row and column, and readers
seeing only de-identified context (age bracket, never the age)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.errors import BadInput
from pacslabel.projects.clinical import age_bracket, import_clinical_csv, reader_context
from pacslabel.projects.models import ClinicalRecord, Project, ProjectItem
from pacslabel.projects.service import sync_project_items
from tests.projects.helpers import add_series, apply_dict, project_dict

CONTEXT = {"clinical_attributes": [{"name": "psa", "type": "number", "unit": "ng/mL"},
                                   {"name": "prior_biopsy", "type": "choice",
                                    "choices": ["none", "negative", "positive"]}]}


def _project(session: Session) -> Project:
    add_series(session, "PAT-A", "s1", "t2")
    add_series(session, "PAT-B", "s1", "t2")
    project = apply_dict(session, project_dict(context=CONTEXT))
    sync_project_items(session, project)
    return project


def test_age_brackets() -> None:
    assert [age_bracket(a) for a in (0, 9, 47, 89, 90, 104)] == ["0-9", "0-9", "40-49", "80-89", "90+", "90+"]


def test_import_and_reader_context_show_only_deidentified_context(db_session: Session) -> None:
    project = _project(db_session)
    csv_text = "patient,age,sex,psa,prior_biopsy\nPAT-A,67,M,7.4,negative\nPAT-B,93,m,,\n"
    result = import_clinical_csv(db_session, project, csv_text, "tester")
    assert (result.rows, result.patients) == (2, 2)
    records = db_session.scalars(select(ClinicalRecord)).all()
    assert sorted(r.age_bracket or "" for r in records) == ["60-69", "90+"]
    contexts = [reader_context(db_session, project, item) for item in db_session.scalars(select(ProjectItem))]
    by_bracket = {c["age_bracket"]: c for c in contexts}
    assert by_bracket["60-69"] == {"age_bracket": "60-69", "sex": "M", "clinical": [
        {"name": "psa", "value": 7.4, "unit": "ng/mL"}, {"name": "prior_biopsy", "value": "negative", "unit": None}]}
    assert by_bracket["90+"]["clinical"][0]["value"] is None
    assert "67" not in str(contexts) and "93" not in str(contexts)  # the age itself is never shown


def test_bad_csv_errors_name_row_and_column_and_import_nothing(db_session: Session) -> None:
    project = _project(db_session)
    csv_text = ("patient,age,sex,psa,prior_biopsy\n"
                "PAT-A,sixty,M,7.4,negative\n"
                "PAT-B,50,X,high,maybe\n"
                "PAT-UNKNOWN,50,F,1,none\n")
    with pytest.raises(BadInput) as caught:
        import_clinical_csv(db_session, project, csv_text, "tester", filename="clinical.csv")
    message = caught.value.message
    assert "clinical.csv row 2, column 'age'" in message
    assert "clinical.csv row 3, column 'sex'" in message
    assert "clinical.csv row 3, column 'psa': not a number" in message
    assert "clinical.csv row 3, column 'prior_biopsy'" in message
    assert "clinical.csv row 4, column 'patient'" in message
    assert "high" not in message and "sixty" not in message  # values are never echoed
    assert db_session.scalars(select(ClinicalRecord)).all() == []


def test_undeclared_columns_are_refused(db_session: Session) -> None:
    project = _project(db_session)
    with pytest.raises(BadInput) as caught:
        import_clinical_csv(db_session, project, "patient,name\nPAT-A,Jane Doe\n", "tester", filename="c.csv")
    assert "c.csv row 1, column 'name': not declared" in caught.value.message
    assert "Jane" not in caught.value.message
