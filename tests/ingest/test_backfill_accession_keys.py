"""`pacslabel ingest backfill-accession-keys` against a real Orthanc and both databases: studies that came in
through the storage SCP and the worker, catalogued before the catalogue recorded ``accession_key`` (NULL),
get exactly the keyed accession ingest records today, so an admin finds them by original accession; a rerun
changes nothing; a study without an accession number or missing from Orthanc stays NULL and is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from pacslabel.audit.models import AuditEvent
from pacslabel.catalog.accession_backfill import AUDIT_ACTION
from pacslabel.catalog.models import CatalogPatient, CatalogStudy
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.deid.pseudonyms import Pseudonymizer
from pacslabel.ingest import dimse_status
from pacslabel.ingest.commands import app as ingest_cli
from pacslabel.ingest.worker import Worker
from pacslabel.orthanc.client import OrthancUnavailable
from pacslabel.review.ground_truth import studies_by_accession
from pacslabel.settings import Settings
from tests.fixtures.orthanc import RunningOrthanc, ct_dataset, free_port
from tests.ingest.conftest import ingest_settings, running_scp
from tests.ingest.helpers import send_files, write_dataset

pytestmark = [pytest.mark.orthanc]

ORIGINAL_ACCESSIONS = ["ACC-BACKFILL-1", "ACC-BACKFILL-2"]


def _env(settings: Settings, var: Path, db_url: str) -> dict[str, str]:
    return {"PACSLABEL_ENV": "test", "PACSLABEL_VAR_DIR": str(var), "PACSLABEL_DATABASE_URL": db_url,
            "PACSLABEL_PSEUDONYM_KEY": settings.secret("pseudonym_key"), "PACSLABEL_SESSION_SECRET": "s",
            "PACSLABEL_ORTHANC_URL": settings.orthanc_url,
            "PACSLABEL_ORTHANC_PASSWORD": settings.secret("orthanc_password"), "PACSLABEL_LOG_FORMAT": "text"}


def _ingest(settings: Settings, tmp_path: Path) -> list[str]:
    """Two studies with an accession number and one without, through the SCP and the worker; returns the
    original Study Instance UIDs in that order."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    datasets = [ct_dataset() for _ in range(3)]
    for ds, accession in zip(datasets, [*ORIGINAL_ACCESSIONS, ""], strict=True):
        ds.AccessionNumber = accession
    files = [write_dataset(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate(datasets)]
    with running_scp(settings):
        assert set(send_files(settings.scp_port, files).statuses.values()) == {dimse_status.SUCCESS}
    worker = Worker(settings)
    try:
        worker.run_until_idle(timeout_s=60)
    finally:
        worker.close()
    return [str(ds.StudyInstanceUID) for ds in datasets]


def test_backfill_fills_the_keys_ingest_would_have_recorded_and_is_idempotent(
        tmp_path: Path, db_url: str, orthanc: RunningOrthanc) -> None:
    var = tmp_path / "var"
    settings = ingest_settings(var, db_url, orthanc)
    _ingest(settings, tmp_path / "in")
    engine = create_db_engine(db_url)
    factory = make_sessionmaker(engine)
    keyed = Pseudonymizer(settings.secret("pseudonym_key").encode())
    try:
        with session_scope(factory) as session:
            recorded = {s.study_instance_uid: s.accession_key for s in session.scalars(select(CatalogStudy))}
            # What ingest records today: the keyed accession of the two, nothing for the empty one.
            assert sorted(k for k in recorded.values() if k) == sorted(keyed.accession_number(a)
                                                                         for a in ORIGINAL_ACCESSIONS)
            assert len(recorded) == 3
            # As catalogued before the column existed; plus a study Orthanc does not hold.
            session.execute(update(CatalogStudy).values(accession_key=None))
            patient = session.scalar(select(CatalogPatient))
            assert patient is not None
            session.add(CatalogStudy(study_instance_uid="1.2.826.0.1.3680043.8.498.999", patient_id=patient.id))

        runner = CliRunner()
        env = _env(settings, var, db_url)
        first = runner.invoke(ingest_cli, ["backfill-accession-keys", "--batch-size", "2"], env=env)
        assert first.exit_code == 0, first.output
        assert "filled 2 of 4 studies; 1 without an accession number, 1 not in Orthanc" in first.output
        assert "still without a key: 1.2.826.0.1.3680043.8.498.999" in first.output
        with session_scope(factory) as session:
            after = {s.study_instance_uid: s.accession_key for s in session.scalars(select(CatalogStudy))}
            assert {uid: after[uid] for uid in recorded} == recorded  # exactly what ingest recorded
            # The admin's accession lookup finds both studies by their original accession numbers again.
            found = studies_by_accession(session, keyed, ORIGINAL_ACCESSIONS)
            assert {a: [s.accession_key for s in found[a]] for a in ORIGINAL_ACCESSIONS} == {
                a: [keyed.accession_number(a)] for a in ORIGINAL_ACCESSIONS}
            audits = [(e.actor, e.detail) for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION).order_by(AuditEvent.id))]
        # Two batches of two; the counts add up to the report, no value in the audit trail.
        assert [actor for actor, _ in audits] == ["cli", "cli"]
        totals = {k: sum(d[k] for _, d in audits) for k in ("studies", "filled", "without_accession",
                                                                  "not_in_orthanc", "unchanged")}
        assert totals == {"studies": 4, "filled": 2, "without_accession": 1, "not_in_orthanc": 1, "unchanged": 0}
        assert not any(keyed.accession_number(a) in str(d) for _, d in audits for a in ORIGINAL_ACCESSIONS)

        # A rerun looks only at the two still without a key, and changes nothing.
        again = runner.invoke(ingest_cli, ["backfill-accession-keys"], env=env)
        assert again.exit_code == 0, again.output
        assert "filled 0 of 2 studies; 1 without an accession number, 1 not in Orthanc" in again.output
        with session_scope(factory) as session:
            assert {s.study_instance_uid: s.accession_key for s in session.scalars(select(CatalogStudy))} == after
    finally:
        engine.dispose()


def test_backfill_refuses_a_bad_batch_size_reports_orthanc_down_and_says_when_nothing_is_missing(
        tmp_path: Path, db_url: str, orthanc: RunningOrthanc) -> None:
    var = tmp_path / "var"
    settings = ingest_settings(var, db_url, orthanc)
    runner = CliRunner()
    env = _env(settings, var, db_url)
    bad = runner.invoke(ingest_cli, ["backfill-accession-keys", "--batch-size", "0"], env=env)
    assert bad.exit_code == 2
    assert "greater than or equal to 1" in bad.output
    assert "nothing to do" in runner.invoke(ingest_cli, ["backfill-accession-keys"], env=env).output

    engine = create_db_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            patient = CatalogPatient(pseudonym="PL-BACKFILL")
            session.add(patient)
            session.flush()
            session.add(CatalogStudy(study_instance_uid="1.2.826.0.1.3680043.8.498.998", patient_id=patient.id))
        down = runner.invoke(ingest_cli, ["backfill-accession-keys"],
                             env={**env, "PACSLABEL_ORTHANC_URL": f"http://127.0.0.1:{free_port()}"})
        # `pacslabel` turns this error into one line and exit code 1 (cli.main); nothing was written.
        assert isinstance(down.exception, OrthancUnavailable), down.output
        assert "Orthanc" in down.exception.message
        with session_scope(make_sessionmaker(engine)) as session:
            assert session.scalar(select(CatalogStudy.accession_key)) is None
            assert session.scalar(select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION)) is None
    finally:
        engine.dispose()
