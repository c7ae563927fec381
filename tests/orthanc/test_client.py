"""OrthancClient against a real Orthanc: REST, DICOMweb and the error mapping."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydicom.uid import generate_uid

from pacslabel.orthanc.client import OrthancClient, OrthancError, OrthancUnavailable, StoredInstance
from tests.fixtures.orthanc import RunningOrthanc, ct_dataset, dataset_bytes, free_port

pytestmark = pytest.mark.orthanc


def test_stored_instance_comes_back_byte_for_byte(orthanc_client: OrthancClient) -> None:
    ds = ct_dataset()
    data = dataset_bytes(ds)

    stored = orthanc_client.store_instance(data)

    assert stored.status == "Success"
    assert stored.sop_instance_uid == ds.SOPInstanceUID
    assert stored.series_orthanc_id and stored.study_orthanc_id
    assert orthanc_client.get_instance_file(stored.orthanc_id) == data


def test_storing_the_same_instance_twice_answers_already_stored(orthanc_client: OrthancClient) -> None:
    data = dataset_bytes(ct_dataset())
    first = orthanc_client.store_instance(data)
    count = orthanc_client.count_instances()

    second = orthanc_client.store_instance(data)

    assert second == StoredInstance(
        orthanc_id=first.orthanc_id,
        status="AlreadyStored",
        sop_instance_uid=first.sop_instance_uid,
        series_orthanc_id=first.series_orthanc_id,
        study_orthanc_id=first.study_orthanc_id,
    )
    assert orthanc_client.count_instances() == count


def test_find_instance_maps_a_sop_instance_uid_to_the_orthanc_id(orthanc_client: OrthancClient) -> None:
    ds = ct_dataset()
    stored = orthanc_client.store_instance(dataset_bytes(ds))

    assert orthanc_client.find_instance(ds.SOPInstanceUID) == stored.orthanc_id
    assert orthanc_client.find_instance(generate_uid()) is None
    # A study UID matches a study, not an instance.
    assert orthanc_client.find_instance(ds.StudyInstanceUID) is None


def test_instance_ids_are_listed_and_paged_in_insertion_order(orthanc_client: OrthancClient) -> None:
    before = orthanc_client.count_instances()
    ids = [orthanc_client.store_instance(dataset_bytes(ct_dataset())).orthanc_id for _ in range(3)]

    assert orthanc_client.count_instances() == before + 3
    everything = orthanc_client.list_instance_ids()
    assert set(ids) <= set(everything)
    assert orthanc_client.list_instance_ids(since=before, limit=2) == ids[:2]
    assert orthanc_client.list_instance_ids(since=before + 2) == ids[2:]


def test_qido_finds_the_stored_study_series_and_instance(orthanc_client: OrthancClient) -> None:
    ds = ct_dataset()
    orthanc_client.store_instance(dataset_bytes(ds))

    studies = orthanc_client.search_for_studies({"StudyInstanceUID": ds.StudyInstanceUID})
    series = orthanc_client.search_for_series(ds.StudyInstanceUID)
    instances = orthanc_client.search_for_instances(ds.StudyInstanceUID, ds.SeriesInstanceUID)

    assert [s["0020000D"]["Value"] for s in studies] == [[ds.StudyInstanceUID]]
    assert [s["0020000E"]["Value"] for s in series] == [[ds.SeriesInstanceUID]]
    assert [i["00080018"]["Value"] for i in instances] == [[ds.SOPInstanceUID]]
    assert orthanc_client.search_for_studies({"StudyInstanceUID": generate_uid()}) == []
    assert len(orthanc_client.search_for_studies(limit=1)) == 1


def test_series_metadata_is_full_and_its_bulk_uris_point_at_orthanc(
    orthanc: RunningOrthanc, orthanc_client: OrthancClient
) -> None:
    ds = ct_dataset()
    orthanc_client.store_instance(dataset_bytes(ds))

    [metadata] = orthanc_client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)

    assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert metadata["00180060"]["Value"] == [120]  # KVP: not a main DICOM tag, so "Full" metadata
    # dicomweb-client's Host header would drop the port; the client puts it back.
    assert metadata["7FE00010"]["BulkDataURI"].startswith(f"{orthanc.url}/dicom-web/studies/")


def test_retrieve_instance_returns_the_dataset(orthanc_client: OrthancClient) -> None:
    ds = ct_dataset()
    orthanc_client.store_instance(dataset_bytes(ds))

    got = orthanc_client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert got.PixelData == ds.PixelData


def test_stow_stores_datasets_and_answers_with_their_references(orthanc_client: OrthancClient) -> None:
    study = generate_uid()
    series = generate_uid()
    datasets = [ct_dataset(study_instance_uid=study, series_instance_uid=series, instance_number=n)
                for n in (1, 2)]
    meta_before = [dict(ds.file_meta) for ds in datasets]

    response = orthanc_client.store_instances(datasets)

    referenced = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    assert not response.get("FailedSOPSequence")
    for ds in datasets:
        assert orthanc_client.find_instance(ds.SOPInstanceUID) is not None
    # The caller's datasets are not changed by the Part-10 wrapping.
    assert [dict(ds.file_meta) for ds in datasets] == meta_before


def test_garbage_bytes_give_an_orthanc_error_with_orthancs_reason(orthanc_client: OrthancClient) -> None:
    with pytest.raises(OrthancError) as caught:
        orthanc_client.store_instance(b"this is not DICOM")

    error = caught.value
    assert not isinstance(error, OrthancUnavailable)
    assert error.status_code == 502
    assert error.upstream_status == 400
    assert error.message.startswith("Orthanc answered 400 to POST /instances: Bad file format")


def test_an_unknown_orthanc_id_is_a_404_from_orthanc(orthanc_client: OrthancClient) -> None:
    with pytest.raises(OrthancError) as caught:
        orthanc_client.get_instance_file("00000000-00000000-00000000-00000000-00000000")
    assert caught.value.upstream_status == 404


def test_a_string_that_is_not_an_orthanc_id_never_reaches_orthanc(orthanc_client: OrthancClient) -> None:
    with pytest.raises(ValueError, match="not an Orthanc identifier"):
        orthanc_client.get_instance_file("../tools/reset")


def test_system_and_dicomweb_checks_pass_on_a_running_orthanc(orthanc_client: OrthancClient) -> None:
    assert orthanc_client.system()["Version"] == "1.10.1"
    assert orthanc_client.is_alive()
    orthanc_client.check_dicomweb()


def test_wrong_credentials_are_an_orthanc_error_naming_the_user(orthanc: RunningOrthanc) -> None:
    with OrthancClient(orthanc.url, "pacslabel", "wrong") as client:
        with pytest.raises(OrthancError, match="refused the credentials of user 'pacslabel'") as caught:
            client.system()
        assert caught.value.upstream_status == 401
        assert not client.is_alive()
        with pytest.raises(OrthancError, match="401"):
            client.search_for_studies()


def test_a_closed_port_is_unavailable_at_once() -> None:
    with OrthancClient(f"http://127.0.0.1:{free_port()}", "u", "p", timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(OrthancUnavailable, match="unreachable") as caught:
            client.system()
        with pytest.raises(OrthancUnavailable, match="unreachable"):
            client.search_for_studies()
        assert not client.is_alive()
    assert caught.value.status_code == 503
    assert time.monotonic() - started < 2


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_server_that_does_not_answer_times_out_as_unavailable(silent_server: str) -> None:
    with OrthancClient(silent_server, "u", "p", timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(OrthancUnavailable, match=r"did not answer GET /system within 0.5 s") as caught:
            client.system()
        with pytest.raises(OrthancUnavailable, match="did not answer QIDO studies"):
            client.search_for_studies()
    assert caught.value.status_code == 504
    assert time.monotonic() - started < 3


class _RecordingHandler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append({key.lower(): value for key, value in self.headers.items()})
        body = b"[]" if "dicom-web" in self.path else b'{"Version": "test"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_both_pools_ask_for_identity_encoding_and_send_basic_auth() -> None:
    _RecordingHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with OrthancClient(f"http://127.0.0.1:{server.server_port}", "user", "secret") as client:
            client.system()
            client.search_for_studies()
    finally:
        server.shutdown()
        server.server_close()
    expected_auth = "Basic " + base64.b64encode(b"user:secret").decode()
    assert [h["accept-encoding"] for h in _RecordingHandler.seen] == ["identity", "identity"]
    assert [h["authorization"] for h in _RecordingHandler.seen] == [expected_auth, expected_auth]


def test_credentials_never_appear_in_logs(
    orthanc: RunningOrthanc, caplog: pytest.LogCaptureFixture
) -> None:
    password = orthanc.settings.secret("orthanc_password")
    token = base64.b64encode(f"{orthanc.settings.orthanc_username}:{password}".encode()).decode()
    ds = ct_dataset()
    with caplog.at_level(logging.DEBUG), OrthancClient.from_settings(orthanc.settings) as client:
        client.store_instance(dataset_bytes(ds))
        client.search_for_studies({"StudyInstanceUID": ds.StudyInstanceUID})
        client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        client.store_instances([ct_dataset()])
        with pytest.raises(OrthancError):
            client.store_instance(b"garbage")
    assert caplog.records, "expected debug logging to have been captured"
    assert password not in caplog.text
    assert token not in caplog.text
    assert "authorization" not in caplog.text.lower()
