"""Worker behaviour: poison goes to quarantine with a reason, Orthanc down keeps rows queued, release works."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.demo.synthetic import generate_demo_studies
from pacslabel.ingest import dimse_status, service
from pacslabel.ingest.models import IngestItem, ItemStatus, QuarantineItem
from pacslabel.ingest.worker import Worker, WorkerOptions
from pacslabel.settings import Settings
from tests.fixtures.orthanc import RunningOrthanc, ct_dataset, dataset_bytes, free_port
from tests.ingest.conftest import ingest_settings, running_scp
from tests.ingest.helpers import send_files, write_dataset

pytestmark = [pytest.mark.orthanc]


def _items(settings: Settings) -> list[IngestItem]:
    engine = create_db_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(IngestItem).order_by(IngestItem.id)))
    finally:
        engine.dispose()


def _quarantine(settings: Settings) -> list[QuarantineItem]:
    engine = create_db_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(QuarantineItem).order_by(QuarantineItem.id)))
    finally:
        engine.dispose()


@pytest.fixture
def make(tmp_path: Path, db_url: str, orthanc: RunningOrthanc) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        return ingest_settings(tmp_path / "var", db_url, orthanc, **overrides)

    return build


def test_truncated_and_huge_inputs_get_a_clear_outcome_and_good_data_still_flows(
        make: Callable[..., Settings], tmp_path: Path, orthanc: RunningOrthanc) -> None:
    settings = make()
    inbox = tmp_path / "in"
    inbox.mkdir()
    truncated = inbox / "truncated.dcm"
    full = dataset_bytes(ct_dataset(rows=64, columns=64))
    truncated.write_bytes(full[:-3000])  # header intact, pixel data cut short
    huge = ct_dataset()
    block = huge.private_block(0x0011, "ACME HUGE", create=True)
    block.add_new(0x01, "OB", b"\x5a" * (20 * 1024 * 1024))
    huge_path = write_dataset(huge, inbox / "huge.dcm")
    good_path = write_dataset(ct_dataset(), inbox / "good.dcm")
    with running_scp(settings):
        result = send_files(settings.scp_port, [truncated, huge_path, good_path])
    assert result.statuses == {"truncated.dcm": dimse_status.SUCCESS, "huge.dcm": dimse_status.SUCCESS,
                               "good.dcm": dimse_status.SUCCESS}
    worker = Worker(settings)
    try:
        worker.run_until_idle(timeout_s=60)
    finally:
        worker.close()
    items = {row.spool_name: row for row in _items(settings)}
    statuses = sorted(row.status for row in items.values())
    assert statuses == [ItemStatus.DONE, ItemStatus.DONE, ItemStatus.QUARANTINED]
    [record] = _quarantine(settings)
    assert "truncated" in record.reason and record.status == "held"
    assert (settings.quarantine_dir / record.file_name).exists()
    assert list(settings.spool_dir.glob("*.dcm")) == []
    for row in items.values():
        if row.status == ItemStatus.DONE:
            stored = dcmread(BytesIO(orthanc.client.get_instance_file(row.orthanc_id or "")))
            assert (0x0011, 0x0010) not in stored and (0x0011, 0x1001) not in stored  # private block removed


def test_orthanc_down_keeps_rows_queued_with_backoff_then_forwards(
        make: Callable[..., Settings], tmp_path: Path, orthanc: RunningOrthanc) -> None:
    settings = make()
    files = [write_dataset(ct_dataset(instance_number=n), tmp_path / f"{n}.dcm") for n in range(3)]
    with running_scp(settings):
        assert set(send_files(settings.scp_port, files).statuses.values()) == {dimse_status.SUCCESS}
    down = settings.model_copy(update={"orthanc_url": f"http://127.0.0.1:{free_port()}"})
    worker = Worker(down, options=WorkerOptions(backoff_start_s=0.2, backoff_cap_s=0.4))
    try:
        assert worker.run_once() == 3
        assert worker.run_once() == 0  # not due yet: backed off
    finally:
        worker.close()
    rows = _items(settings)
    assert {row.status for row in rows} == {ItemStatus.QUEUED}
    assert all("Orthanc unavailable" in (row.last_error or "") for row in rows)
    assert len(list(settings.spool_dir.glob("*.dcm"))) == 3
    worker = Worker(settings)
    try:
        worker.run_until_idle(timeout_s=30)
    finally:
        worker.close()
    assert {row.status for row in _items(settings)} == {ItemStatus.DONE}
    assert list(settings.spool_dir.glob("*.dcm")) == []


def test_quarantined_instance_can_be_released_after_a_policy_change(
        make: Callable[..., Settings], tmp_path: Path, orthanc: RunningOrthanc) -> None:
    demo = generate_demo_studies(tmp_path / "demo", seed=11, scale="small")
    capture = next(i.path for i in demo.instances if i.modality == "OT")
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {calling: CT1, route: strict, deid: {burned_in_text: quarantine}}\n")
    settings = make(scp_routes_file=routes)
    with running_scp(settings):
        assert send_files(settings.scp_port, [capture], calling="CT1").statuses == {capture.name: 0}
    worker = Worker(settings)
    try:
        worker.run_until_idle(timeout_s=60)
    finally:
        worker.close()
    [record] = _quarantine(settings)
    assert "Burned-in text" in record.reason
    assert _items(settings)[0].route == "strict"

    routes.write_text("routes:\n  - {calling: CT1, route: strict, deid: {burned_in_text: clean}}\n")
    engine = create_db_engine(settings.effective_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            service.release(session, settings, record.id, actor="admin")
        worker = Worker(settings)
        try:
            worker.run_until_idle(timeout_s=60)
        finally:
            worker.close()
        [row] = _items(settings)
        assert row.status == ItemStatus.DONE
        stored = dcmread(BytesIO(orthanc.client.get_instance_file(row.orthanc_id or "")))
        assert stored.BurnedInAnnotation == "NO"
        assert _quarantine(settings)[0].status == "released"
    finally:
        engine.dispose()
