"""Ground truth from clinical outcomes and the admin's accession lookup, on a real database and Orthanc.

The studies go the ingest's way: synthetic CT slices with original PatientID and AccessionNumber are
de-identified with the settings' pseudonym key, stored in Orthanc and recorded in the catalog by
`record_instances` (what the ingest worker does), so the catalog holds the keyed HMAC of each accession and
never the original. An admin imports outcomes keyed by original accession or by pseudonymous patient; they
override the consensus of those items, are recorded with file, line and importer, and a later import wins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from pacslabel.audit.models import AuditEvent
from pacslabel.catalog.models import CatalogPatient, CatalogStudy
from pacslabel.catalog.service import LandedInstance, record_instances
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.db.base import utcnow
from pacslabel.deid import Deidentifier
from pacslabel.errors import Forbidden
from pacslabel.projects.models import ProjectItem
from pacslabel.projects.yaml_loading import ProjectFileError
from pacslabel.review import workflow
from pacslabel.review.commands import app as review_cli
from pacslabel.review.ground_truth import ground_truth_answers
from pacslabel.review.models import FinalSource, GroundTruthAnswer, GroundTruthImport
from pacslabel.users import service as user_service
from pacslabel.users.models import User
from tests.annotations.sources import make_ct_series
from tests.annotations.test_versions_env import build_app, protocol
from tests.fixtures.orthanc import RunningOrthanc, dataset_bytes
from tests.projects.helpers import apply_dict, project_dict

# Original identifiers as a hospital PACS would send them (PHI: they must never be stored).
ORIGINALS = {"A": ("MRN-0001", "ACC-7001"), "B": ("MRN-0002", "ACC-7002"), "C": ("MRN-0003", "ACC-7003")}
QUESTIONS = [{"id": "lesion_present", "text": "Is a lesion present?", "answers": ["yes", "no"]},
             {"id": "grade", "text": "Tumour grade", "answers": ["low", "high"]}]


@dataclass
class OutcomeEnv:
    client: TestClient
    sessions: sessionmaker[Session]
    headers: dict[str, dict[str, str]]
    items: dict[str, int]  # study name -> item id
    pseudonyms: dict[str, str]  # study name -> pseudonymous PatientID
    study_uids: dict[str, str]
    var_dir: Path
    db_url: str


def _ingest(session: Session, orthanc: RunningOrthanc, deidentifier: Deidentifier, name: str) -> CatalogStudy:
    """De-identify one synthetic series, store it in Orthanc and record it in the catalog like the worker."""
    patient_id, accession = ORIGINALS[name]
    landed = []
    for ds in make_ct_series(slices=3, rows=16, columns=16):
        ds.PatientID, ds.PatientName, ds.AccessionNumber = patient_id, f"Doe^{name}", accession
        deid = deidentifier.deidentify_bytes(dataset_bytes(ds))
        stored = orthanc.client.store_instance(deid.data)
        landed.append(LandedInstance(
            patient_id=deid.patient_id, study_instance_uid=deid.study_instance_uid,
            series_instance_uid=deid.series_instance_uid, sop_instance_uid=deid.sop_instance_uid,
            sop_class_uid=deid.sop_class_uid, attributes=dict(deid.attributes), orthanc_id=stored.orthanc_id,
            series_orthanc_id=stored.series_orthanc_id, study_orthanc_id=stored.study_orthanc_id,
            route="liver-ct", source_ae="PACS", received_at=utcnow()))
    record_instances(session, landed)
    study = session.scalar(select(CatalogStudy).where(CatalogStudy.study_instance_uid == landed[0].study_instance_uid))
    assert study is not None
    return study


@pytest.fixture
def outcome_env(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[OutcomeEnv]:
    settings = orthanc.settings.model_copy(update={"database_url": db_url, "var_dir": tmp_path / "var"})
    deidentifier = Deidentifier(settings.secret("pseudonym_key").encode())
    engine = create_db_engine(db_url)
    sessions = make_sessionmaker(engine)
    headers: dict[str, dict[str, str]] = {}
    items: dict[str, int] = {}
    pseudonyms: dict[str, str] = {}
    study_uids: dict[str, str] = {}
    with session_scope(sessions) as session:
        for name, role in (("admin1", "admin"), ("rev1", "reviewer"), ("reader1", "annotator")):
            user_service.create_user(session, name, role, "a long enough password")
            headers[name] = {"Authorization": f"Bearer {user_service.create_api_token(session, name)}"}
        project = apply_dict(session, project_dict(
            slug="liver-outcomes", name="Liver outcomes",
            selection={"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]},
            protocol={**protocol(), "questions": QUESTIONS},
            readers_per_split={"train": 1, "validation": 3, "test": 3}))
        for name in ORIGINALS:
            study = _ingest(session, orthanc, deidentifier, name)
            item = ProjectItem(project_id=project.id, unit="study", unit_uid=study.study_instance_uid,
                               study_id=study.id, patient_id=study.patient_id, series_uids=[], split="test",
                               stage="continuous", needs_review=True, released_at=utcnow(),
                               order_key=hashlib.sha256(study.study_instance_uid.encode()).hexdigest())
            session.add(item)
            session.flush()
            items[name] = item.id
            patient = session.get(CatalogPatient, study.patient_id)
            assert patient is not None
            pseudonyms[name] = patient.pseudonym
            study_uids[name] = study.study_instance_uid
        # Item A already has a consensus final label: the outcomes must override it.
        workflow.set_final_label(session, items["A"], FinalSource.CONSENSUS, session.scalars(
            select(User).where(User.username == "admin1")).one())
    with TestClient(build_app(settings)) as client:
        yield OutcomeEnv(client, sessions, headers, items, pseudonyms, study_uids, tmp_path / "var", db_url)
    engine.dispose()


def upload(env: OutcomeEnv, csv_text: str | bytes, user: str = "admin1", name: str = "outcomes.csv",
           slug: str = "liver-outcomes") -> object:
    data = csv_text.encode() if isinstance(csv_text, str) else csv_text
    return env.client.post(f"/api/projects/{slug}/ground-truth", headers=env.headers[user],
                           files={"file": (name, data, "text/csv")})


def test_outcomes_by_accession_or_patient_override_consensus_with_provenance(outcome_env: OutcomeEnv) -> None:
    env = outcome_env
    # The catalog knows the studies by the keyed HMAC of their accession, never by the original.
    with session_scope(env.sessions) as session:
        keys = set(session.scalars(select(CatalogStudy.accession_key)))
        assert len(keys) == 3 and None not in keys
        assert not keys & {accession for _, accession in ORIGINALS.values()}

    long_form = upload(env, "accession,question,answer\nACC-7001,lesion_present,yes\nACC-7001,grade,high\n")
    assert long_form.status_code == 200, long_form.text  # type: ignore[attr-defined]
    assert long_form.json() == {"import_id": 1, "file_name": "outcomes.csv", "rows": 2,  # type: ignore[attr-defined]
                                "answers": 2, "items": [env.items["A"]]}
    wide = upload(env, f"patient,lesion_present,grade\n{env.pseudonyms['B']},no,\n", name="pathology-2026.csv")
    assert wide.status_code == 200, wide.text  # type: ignore[attr-defined]

    with session_scope(env.sessions) as session:
        answers = ground_truth_answers(session, env.items.values())
        assert answers == {env.items["A"]: {"lesion_present": "yes", "grade": "high"},
                           env.items["B"]: {"lesion_present": "no"}}
        finals = {name: workflow.repository.final_label(session, item) for name, item in env.items.items()}
        assert finals["A"] is not None and finals["A"].source == "ground_truth"
        assert finals["B"] is not None and finals["B"].source == "ground_truth"
        assert finals["C"] is None
        # A later consensus (e.g. the reads finishing after the import) does not take ground truth's place.
        admin = session.scalars(select(User).where(User.username == "admin1")).one()
        workflow.set_final_label(session, env.items["A"], FinalSource.CONSENSUS, admin)
        final_a = workflow.repository.final_label(session, env.items["A"])
        assert final_a is not None and final_a.source == "ground_truth"

    # A later import wins for the answers it gives.
    again = upload(env, "accession_number,question,answer\nACC-7001,lesion_present,no\n", name="revised.csv")
    assert again.status_code == 200, again.text  # type: ignore[attr-defined]
    with session_scope(env.sessions) as session:
        assert ground_truth_answers(session, [env.items["A"]]) == {
            env.items["A"]: {"lesion_present": "no", "grade": "high"}}

    provenance = env.client.get(f"/api/items/{env.items['A']}/final-label", headers=env.headers["admin1"])
    assert provenance.status_code == 200, provenance.text
    body = provenance.json()
    assert body["source"] == "ground_truth" and body["ground_truth_import_id"] == 3
    assert [(r["file_name"], r["line"], r["question"], r["answer"], r["importer"], r["key_kind"])
            for r in body["ground_truth"]] == [
        ("outcomes.csv", 2, "lesion_present", "yes", "admin1", "accession"),
        ("outcomes.csv", 3, "grade", "high", "admin1", "accession"),
        ("revised.csv", 2, "lesion_present", "no", "admin1", "accession")]

    # No original accession number is stored anywhere: not in the answers, the imports or the audit trail.
    with session_scope(env.sessions) as session:
        stored = json.dumps([[str(v) for v in row] for row in session.execute(select(GroundTruthAnswer)).tuples()])
        stored += json.dumps([e.detail for e in session.scalars(select(AuditEvent))], default=str)
        stored += json.dumps([[str(v) for v in row] for row in session.execute(text("SELECT * FROM catalog_studies"))])
        assert "ACC-700" not in stored and "MRN-000" not in stored
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "ground_truth_import")).all()
        assert [(e.actor, e.detail["file_name"], e.detail["items"]) for e in events] == [  # type: ignore[index]
            ("admin1", "outcomes.csv", 1), ("admin1", "pathology-2026.csv", 1), ("admin1", "revised.csv", 1)]


@pytest.mark.parametrize(("csv_text", "message"), [
    (b"", "empty"),
    (b"\xff\xfeA\x00", "not UTF-8"),
    ("mrn,question,answer\nx,lesion_present,yes\n", "line 1: the header needs exactly one key column"),
    ("accession,lesion_present,colour\nACC-7001,yes,red\n", "line 1: columns ['colour'] are not questions"),
    ("accession,question,answer\nACC-7001,lesion_present,yes\nACC-7002,lesion_present,maybe\n",
     "line 3: question 'lesion_present' takes one of ['yes', 'no'], not 'maybe'"),
    ("accession,question,answer\nACC-7001,size,big\n", "line 2: 'size' is not a question of the protocol"),
    ("accession,question,answer\nACC-7001,lesion_present\n", "line 2: 2 columns, the header has 3"),
    ("accession,question,answer\nACC-9999,lesion_present,yes\n", "line 2: the accession number matches no item"),
    ("patient,question,answer\nPL-NOBODY,lesion_present,yes\n", "line 2: patient 'PL-NOBODY' matches no item"),
    ("accession,question,answer\nACC-7001,lesion_present,yes\nACC-7001,lesion_present,no\n",
     "line 3: item"),
    ("accession,question,answer\n,lesion_present,yes\n", "line 2: the accession column is empty"),
    ("accession,question,answer\n", "no answers"),
])
def test_bad_outcome_files_get_a_precise_400_and_change_nothing(outcome_env: OutcomeEnv, csv_text: str | bytes,
                                                                 message: str) -> None:
    response = upload(outcome_env, csv_text)
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert message in detail
    assert "ACC-9999" not in detail  # an original accession is never echoed back
    with session_scope(outcome_env.sessions) as session:
        assert session.scalars(select(GroundTruthImport)).all() == []
        assert session.scalars(select(GroundTruthAnswer)).all() == []


def test_only_admins_import_outcomes_and_look_up_accessions(outcome_env: OutcomeEnv) -> None:
    env = outcome_env
    row = "accession,question,answer\nACC-7001,lesion_present,yes\n"
    assert upload(env, row, user="rev1").status_code == 403  # type: ignore[attr-defined]
    assert upload(env, row, slug="no-such-project").status_code == 404  # type: ignore[attr-defined]

    lookup = env.client.post("/api/admin/accession-lookup", headers=env.headers["admin1"],
                             json={"accessions": ["ACC-7002", "ACC-0000"]})
    assert lookup.status_code == 200, lookup.text
    assert lookup.json()["results"] == [
        {"accession": "ACC-7002", "found": True,
         "studies": [{"study_instance_uid": env.study_uids["B"], "patient_pseudonym": env.pseudonyms["B"]}]},
        {"accession": "ACC-0000", "found": False, "studies": []}]
    for user in ("rev1", "reader1"):
        assert env.client.post("/api/admin/accession-lookup", headers=env.headers[user],
                               json={"accessions": ["ACC-7002"]}).status_code == 403
    assert env.client.post("/api/admin/accession-lookup", headers=env.headers["admin1"],
                           json={"accessions": []}).status_code == 422
    assert env.client.post("/api/admin/accession-lookup", headers=env.headers["admin1"],
                           json={"accessions": ["x" * 65]}).status_code == 422
    with session_scope(env.sessions) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "accession_lookup")).all()
        assert event.actor == "admin1" and event.detail is not None
        assert (event.detail["count"], event.detail["found"]) == (2, 1)
        assert "ACC-" not in json.dumps(event.detail)


def test_cli_imports_outcomes_under_an_admin(outcome_env: OutcomeEnv, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`pacslabel review import-outcomes` (the typer app mounted as `pacslabel review`), with the same settings
    (database, pseudonym key in var/) as the server."""
    env = outcome_env
    monkeypatch.setenv("PACSLABEL_DATABASE_URL", env.db_url)
    monkeypatch.setenv("PACSLABEL_VAR_DIR", str(env.var_dir))
    outcomes = tmp_path / "outcomes-cli.csv"
    outcomes.write_text(f"patient,grade\n{env.pseudonyms['C']},low\n")
    runner = CliRunner()
    refused = runner.invoke(review_cli, ["import-outcomes", "liver-outcomes", str(outcomes), "--as", "rev1"])
    assert isinstance(refused.exception, Forbidden)  # pacslabel.cli.main prints it as one line, exit 1
    assert "not an active admin" in str(refused.exception)
    done = runner.invoke(review_cli, ["import-outcomes", "liver-outcomes", str(outcomes), "--as", "admin1"])
    assert done.exit_code == 0, done.output
    assert "1 rows, 1 answers, 1 items" in done.output
    with session_scope(env.sessions) as session:
        assert ground_truth_answers(session, [env.items["C"]]) == {env.items["C"]: {"grade": "low"}}
        batch = session.scalars(select(GroundTruthImport)).one()
        assert batch.file_name == "outcomes-cli.csv"


def test_project_file_consensus_settings_are_checked_with_line_numbers() -> None:
    from pacslabel.projects.yaml_loading import parse_project_file

    base = "\n".join([
        "slug: consensus-check", "name: Consensus check",
        "split: {ratios: {train: 0.8, validation: 0.1, test: 0.1}}",
        "readers_per_split: {train: 1, validation: 3, test: 3}",
    ])
    good = parse_project_file(base + "\nconsensus:\n  method: staple\n  weights:\n    roles: {reviewer: 2}\n",
                              "p.yaml")
    assert good.consensus.method == "staple" and good.consensus.weights is not None
    assert parse_project_file(base + "\n", "p.yaml").consensus.method == "majority"
    with pytest.raises(ProjectFileError) as bad_method:
        parse_project_file(base + "\nconsensus:\n  method: vote\n", "p.yaml")
    assert [(p.line, p.field) for p in bad_method.value.problems] == [(6, "consensus.method")]
    with pytest.raises(ProjectFileError) as bad_weight:
        parse_project_file(base + "\nconsensus:\n  weights:\n    users: {alice: -1}\n", "p.yaml")
    assert [p.line for p in bad_weight.value.problems] == [7]
