"""The storage SCP on its own: durable spool + queue row before Success, clear statuses for bad input."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.ingest import dimse_status
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.ingest.queue import sop_uid_digest
from pacslabel.settings import Settings
from tests.fixtures.orthanc import ct_dataset, dataset_bytes
from tests.ingest.conftest import running_scp
from tests.ingest.helpers import DCMTK_ENV, send_files, storescu, write_dataset


def _rows(settings: Settings) -> list[IngestItem]:
    engine = create_db_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(IngestItem).order_by(IngestItem.id)))
    finally:
        engine.dispose()


def _ct_files(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    study, series = ct_dataset().StudyInstanceUID, ct_dataset().SeriesInstanceUID
    return [write_dataset(ct_dataset(study_instance_uid=study, series_instance_uid=series, instance_number=n + 1),
                          directory / f"ct{n}.dcm") for n in range(count)]


def test_echo_and_storescu_send_are_spooled_and_queued_before_success(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    files = _ct_files(tmp_path / "in", 5)
    with running_scp(settings):
        echo = subprocess.run(["echoscu", "-aet", "CT1", "127.0.0.1", str(settings.scp_port)], env=DCMTK_ENV,
                              capture_output=True, text=True, timeout=30, check=False)
        assert echo.returncode == 0, echo.stderr
        sent = storescu(settings.scp_port, files, calling="CT1")
        assert sent.returncode == 0, sent.stderr
    rows = _rows(settings)
    assert len(rows) == 5
    key = settings.secret("pseudonym_key").encode()
    originals = {str(dcmread(f).SOPInstanceUID) for f in files}
    assert {row.sop_uid_hmac for row in rows} == {sop_uid_digest(key, uid) for uid in originals}
    for row in rows:
        assert row.status == ItemStatus.QUEUED and row.calling_ae == "CT1" and row.route == "default"
        spooled = settings.spool_dir / row.spool_name
        assert spooled.stat().st_size == row.size_bytes
        assert str(dcmread(spooled).SOPInstanceUID) in originals  # byte-exact copy with a file meta
        # No original UID anywhere in the row (only the spool file holds it).
        assert not any(uid in " ".join(map(str, vars(row).values())) for uid in originals)
    assert not list(settings.spool_dir.glob("*.part"))


def test_unknown_caller_is_rejected_and_the_scp_keeps_serving(
        make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(scp_allowed_callers="CT1,PACS2@127.0.0.1,FARAWAY@10.9.9.9")
    files = _ct_files(tmp_path / "in", 1)
    with running_scp(settings):
        for calling in ("INTRUDER", "FARAWAY"):
            refused = send_files(settings.scp_port, files, calling=calling)
            assert refused.rejected and refused.reject_reason == 0x03  # calling AE title not recognised
        echo = subprocess.run(["echoscu", "-aet", "NOPE", "127.0.0.1", str(settings.scp_port)], env=DCMTK_ENV,
                              capture_output=True, text=True, timeout=30, check=False)
        assert echo.returncode != 0 and "Calling AE Title Not Recognized" in echo.stderr + echo.stdout
        accepted = send_files(settings.scp_port, files, calling="PACS2")
        assert accepted.statuses == {files[0].name: dimse_status.SUCCESS}
    assert any("calling AE title not recognised" in r.getMessage() for r in caplog.records)
    assert [row.calling_ae for row in _rows(settings)] == ["PACS2"]


def test_bad_input_gets_clear_statuses_and_good_sends_still_work(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    good = _ct_files(tmp_path / "good", 2)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    raw = dataset_bytes(ct_dataset())
    meta_end = raw.index(b"\x08\x00")  # first group-0008 tag: the data set starts here (after the file meta)
    garbage = bad_dir / "garbage.dcm"
    garbage.write_bytes(raw[:meta_end] + bytes(range(256)) * 40)
    no_uid = ct_dataset()
    uid = no_uid.SOPInstanceUID
    del no_uid.SOPInstanceUID
    no_uid.file_meta.MediaStorageSOPInstanceUID = uid
    no_uid_path = bad_dir / "no_uid.dcm"
    no_uid.preamble = b"\x00" * 128
    no_uid.save_as(no_uid_path, enforce_file_format=False)
    wrong_class = ct_dataset()
    wrong_class.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # says MR, data set is CT
    wrong_class.preamble = b"\x00" * 128
    wrong_class_path = bad_dir / "wrong_class.dcm"
    wrong_class.save_as(wrong_class_path, enforce_file_format=False)

    with running_scp(settings):
        result = send_files(settings.scp_port, [garbage, no_uid_path, wrong_class_path, *good])
        # Unsupported transfer syntax: no presentation context is accepted for it.
        odd = send_files(settings.scp_port, [], transfer_syntaxes=["1.2.3.4.5.6.7"])
        assert not odd.rejected
    assert result.statuses["garbage.dcm"] == dimse_status.CANNOT_UNDERSTAND
    assert result.statuses["no_uid.dcm"] == dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "no SOP Instance UID" in result.comments["no_uid.dcm"]
    assert result.statuses["wrong_class.dcm"] == dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert [result.statuses[f.name] for f in good] == [dimse_status.SUCCESS] * 2
    assert len(_rows(settings)) == 2
    assert len(list(settings.spool_dir.glob("*.dcm"))) == 2


def test_unsupported_transfer_syntax_gets_no_presentation_context(
        make_settings: Callable[..., Settings]) -> None:
    from tests.ingest.helpers import scu

    settings = make_settings()
    with running_scp(settings):
        ae = scu(transfer_syntaxes=["1.2.3.4.5.6.7"])
        assoc = ae.associate("127.0.0.1", settings.scp_port, ae_title="PACSLABEL")
        try:
            storage = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax != "1.2.840.10008.1.1"]
            assert storage == []
            rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
            assert "1.2.840.10008.5.1.4.1.1.2" in rejected  # CT Image Storage with an unknown syntax
        finally:
            assoc.release()


def test_disk_below_watermark_answers_out_of_resources(make_settings: Callable[..., Settings],
                                                      tmp_path: Path) -> None:
    settings = make_settings(scp_min_free_bytes=1 << 60)
    files = _ct_files(tmp_path / "in", 1)
    with running_scp(settings):
        result = send_files(settings.scp_port, files)
    assert result.statuses == {files[0].name: dimse_status.OUT_OF_RESOURCES}
    assert _rows(settings) == [] and not list(settings.spool_dir.glob("*.dcm"))


def test_database_down_answers_failure_never_success(tmp_path: Path) -> None:
    from tests.ingest.conftest import ingest_settings

    # Nothing listens on port 9: every connection is refused, as with a database that is down.
    settings = ingest_settings(tmp_path / "var", "postgresql+psycopg://postgres@127.0.0.1:9/none")
    files = _ct_files(tmp_path / "in", 1)
    from pacslabel.ingest.routing import RoutingTable
    from pacslabel.ingest.storage_scp import StorageSCP

    scp = StorageSCP(settings, routing=RoutingTable())
    scp.start = lambda: None  # type: ignore[method-assign]  (recovery needs the database; skip it)
    server = scp.ae.start_server(("127.0.0.1", settings.scp_port), block=False,
                                 evt_handlers=[(__import__("pynetdicom").evt.EVT_C_STORE, scp._on_store)])
    try:
        result = send_files(settings.scp_port, files)
    finally:
        server.shutdown()
        scp.stop()
    assert result.statuses == {files[0].name: dimse_status.QUEUE_UNAVAILABLE}
    assert not list(settings.spool_dir.glob("*.dcm"))  # not acknowledged, so not kept


def test_transfer_syntaxes_and_storage_classes_cover_seg_labelmap_and_sr(make_settings: Callable[..., Settings],
                                                                         ) -> None:
    from pacslabel.ingest.storage_scp import StorageSCP

    settings = make_settings()
    scp = StorageSCP(settings)
    try:
        supported = {cx.abstract_syntax: cx.transfer_syntax for cx in scp.ae.supported_contexts}
        for uid in ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.5.1.4.1.1.88.22",
                    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.2"):
            assert uid in supported
        ct = supported["1.2.840.10008.5.1.4.1.1.2"]
        for ts in (ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
                   "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"):
            assert ts in ct
        assert scp.ae.maximum_pdu_size == 0
    finally:
        scp.stop()
