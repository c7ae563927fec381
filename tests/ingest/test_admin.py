"""/api/ingest (admin only, audited) and `pacslabel ingest status|release|delete`."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from pacslabel.audit.models import AuditEvent
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.ingest import queue
from pacslabel.ingest.commands import app as ingest_cli
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.settings import Settings
from pacslabel.users import service as user_service
from pacslabel.web.app import create_app
from tests.fixtures.database import make_test_settings
from tests.fixtures.orthanc import free_port


def _seed(settings: Settings) -> tuple[str, str, list[int]]:
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.effective_database_url)
    ids = []
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "admin1", "admin", None)
        user_service.create_user(session, "reader1", "annotator", None)
        admin = user_service.create_api_token(session, "admin1", "t")
        reader = user_service.create_api_token(session, "reader1", "t")
        for n in range(2):
            name = f"q{n}.dcm"
            (settings.quarantine_dir / name).write_bytes(b"x")
            item_id = queue.enqueue(session, spool_name=name, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                                 sop_uid_hmac="0" * 64, calling_ae="CT1", called_ae="PACSLABEL", source_host=None,
                                 route="lung", size_bytes=1)
            ids.append(queue.quarantine(session, item_id, "cannot be read or de-identified (EOFError)", name).id)
    engine.dispose()
    return admin, reader, ids


def test_ingest_api_is_admin_only_and_quarantine_actions_are_audited(tmp_path: Path, db_url: str) -> None:
    settings = make_test_settings(tmp_path / "var", database_url=db_url,
                                  orthanc_url=f"http://127.0.0.1:{free_port()}", orthanc_timeout_s=1.0)
    admin, reader, (first, second) = _seed(settings)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/ingest/status").status_code == 401
        assert client.get("/api/ingest/status", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
        auth = {"Authorization": f"Bearer {admin}"}
        report = client.get("/api/ingest/status", headers=auth).json()
        assert report["quarantine_held"] == 2 and report["per_route"] == {"lung": {"quarantined": 2}}
        listed = client.get("/api/ingest/quarantine", headers=auth).json()
        assert {q["id"] for q in listed} == {first, second}
        assert all("EOFError" in q["reason"] for q in listed)
        released = client.post(f"/api/ingest/quarantine/{first}/release", headers=auth)
        assert released.status_code == 200 and released.json()["status"] == "released"
        assert client.post(f"/api/ingest/quarantine/{first}/release", headers=auth).status_code == 409
        assert client.delete(f"/api/ingest/quarantine/{second}", headers=auth).json()["status"] == "deleted"
        assert client.delete("/api/ingest/quarantine/999", headers=auth).status_code == 404
    assert (settings.spool_dir / "q0.dcm").exists() and not (settings.quarantine_dir / "q0.dcm").exists()
    assert not (settings.quarantine_dir / "q1.dcm").exists()
    engine = create_db_engine(db_url)
    with make_sessionmaker(engine)() as session:
        statuses = [i.status for i in session.scalars(select(IngestItem).order_by(IngestItem.id))]
        assert statuses == [ItemStatus.QUEUED, ItemStatus.QUARANTINED]
        actions = [(e.actor, e.action, e.object_id) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("ingest.%")).order_by(AuditEvent.id))]
    engine.dispose()
    assert actions == [("admin1", "ingest.quarantine.release", str(first)),
                       ("admin1", "ingest.quarantine.delete", str(second))]


def test_ingest_cli_prints_status_and_manages_quarantine(tmp_path: Path, db_url: str) -> None:
    var = tmp_path / "var"
    settings = make_test_settings(var, database_url=db_url)
    _, _, (first, second) = _seed(settings)
    env = {"PACSLABEL_ENV": "test", "PACSLABEL_VAR_DIR": str(var), "PACSLABEL_DATABASE_URL": db_url,
           "PACSLABEL_PSEUDONYM_KEY": "k" * 20, "PACSLABEL_SESSION_SECRET": "s", "PACSLABEL_ORTHANC_PASSWORD": "p",
           "PACSLABEL_LOG_FORMAT": "text"}
    runner = CliRunner()
    shown = runner.invoke(ingest_cli, ["status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "quarantine: 2 held" in shown.output and "EOFError" in shown.output and "lung" in shown.output
    assert runner.invoke(ingest_cli, ["release", str(first)], env=env).exit_code == 0
    assert runner.invoke(ingest_cli, ["delete", str(second)], env=env).exit_code == 0
    again = runner.invoke(ingest_cli, ["status", "--json"], env=env)
    assert '"quarantine_held": 0' in again.output
