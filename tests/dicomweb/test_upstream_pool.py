"""The gateway's upstream client (a pool of keep-alive HTTP/1.1 connections to Orthanc) against a real Orthanc:
connections are reused, bounded and dropped when an answer is abandoned; error statuses come back with their
bodies; large answers stream in pieces; a restarted Orthanc is reconnected to without an error; unreachable
is 503 and silent is 504."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacslabel.orthanc.client import OrthancClient, OrthancError, OrthancUnavailable
from pacslabel.orthanc.streaming import OrthancStreamingClient
from pacslabel.orthanc.supervisor import OrthancProcess
from tests.fixtures.orthanc import RunningOrthanc, ct_dataset, orthanc_test_settings

FRAME_ACCEPT = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
DICOM_ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def _series(client: OrthancClient, count: int, size: int = 16) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    datasets = [ct_dataset(study_instance_uid=study, series_instance_uid=series, instance_number=i + 1,
                           rows=size, columns=size) for i in range(count)]
    client.store_instances(datasets)
    return datasets


def _frame_path(ds: Dataset) -> str:
    return f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"


def _client(orthanc: RunningOrthanc, **kwargs: object) -> OrthancStreamingClient:
    return OrthancStreamingClient.from_settings(orthanc.settings, **kwargs)  # type: ignore[arg-type]


def test_keep_alive_connections_are_reused_and_frames_are_byte_exact(orthanc: RunningOrthanc) -> None:
    datasets = _series(orthanc.client, 3, size=64)

    async def scenario() -> tuple[list[bytes], list[str], int, int]:
        client = _client(orthanc)
        bodies, types = [], []
        for ds in datasets * 2:
            status, headers, body = await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT)
            assert status == 200
            bodies.append(body)
            types.append(headers["content-type"])
        idle = client.idle_connections()
        await client.aclose()
        return bodies, types, client.connections_opened, idle

    bodies, types, opened, idle = asyncio.run(scenario())
    assert opened == 1 and idle == 1  # six sequential requests, one connection
    for body, content_type, ds in zip(bodies, types, datasets * 2, strict=True):
        assert "transfer-syntax=1.2.840.10008.1.2.1" in content_type
        assert ds.PixelData in body and len(body) < len(ds.PixelData) + 1024  # one part: the frame + framing


def test_concurrency_is_bounded_by_the_pool_size(orthanc: RunningOrthanc) -> None:
    datasets = _series(orthanc.client, 12, size=128)

    async def scenario() -> tuple[list[int], int, int]:
        client = _client(orthanc, pool_size=3)
        answers = await asyncio.gather(*(client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT)
                                         for ds in datasets))
        idle = client.idle_connections()
        await client.aclose()
        return [status for status, _, _ in answers], client.connections_opened, idle

    statuses, opened, idle = asyncio.run(scenario())
    assert statuses == [200] * 12
    assert opened == 3 and idle == 3


def test_error_statuses_come_back_with_orthancs_body_and_keep_the_connection(orthanc: RunningOrthanc) -> None:
    [ds] = _series(orthanc.client, 1)

    async def scenario() -> list[tuple[int, bytes]]:
        client = _client(orthanc)
        missing = await client.get_bytes(f"studies/{ds.StudyInstanceUID}/series/{generate_uid()}/metadata",
                                         headers={"Accept": "application/dicom+json"})
        refused = await client.get_bytes(_frame_path(ds), headers={"Accept": "multipart/related; type=text/plain"})
        fine = await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT)
        assert client.connections_opened == 1  # error bodies are read to their end: the connection is reused
        await client.aclose()
        return [(s, b) for s, _, b in (missing, refused, fine)]

    (missing, missing_body), (refused, refused_body), (fine, _) = asyncio.run(scenario())
    assert missing == 404
    assert refused == 400 and b"text/plain" in refused_body  # Orthanc's own explanation
    assert fine == 200


def test_a_large_answer_streams_in_pieces_and_an_abandoned_one_closes_its_connection(
        orthanc: RunningOrthanc) -> None:
    datasets = _series(orthanc.client, 6, size=256)  # 6 x 128 KiB of pixels
    path = f"studies/{datasets[0].StudyInstanceUID}/series/{datasets[0].SeriesInstanceUID}"

    async def scenario() -> tuple[list[int], str, bytes, int, int]:
        client = _client(orthanc)
        async with client.stream("GET", path, headers=DICOM_ACCEPT) as response:
            content_type = response.headers["content-type"]
            pieces = [piece async for piece in response.aiter_raw(read_size=32 * 1024)]
        async with client.stream("GET", path, headers=DICOM_ACCEPT) as response:
            async for _ in response.aiter_raw(read_size=1024):
                break  # the client went away after the first KiB
        idle_after_abandon = client.idle_connections()
        status, _, _ = await client.get_bytes(_frame_path(datasets[0]), headers=FRAME_ACCEPT)
        assert status == 200
        await client.aclose()
        return [len(p) for p in pieces], content_type, b"".join(pieces), idle_after_abandon, client.connections_opened

    sizes, content_type, body, idle_after_abandon, opened = asyncio.run(scenario())
    assert len(sizes) > 20 and max(sizes) <= 32 * 1024  # read as it arrives, never whole
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = body.split(b"--" + boundary)[1:-1]
    instances = [pydicom.dcmread(io.BytesIO(p.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")))
                 for p in parts]
    assert sorted(str(i.SOPInstanceUID) for i in instances) == sorted(str(d.SOPInstanceUID) for d in datasets)
    assert idle_after_abandon == 0  # the half-read connection was closed, not pooled
    assert opened >= 2  # ... and the next request dialled anew (Orthanc 1.10 also drops idle ones after 1 s)


def test_the_pool_reconnects_after_orthanc_restarts(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var")
    process = OrthancProcess(settings, grace_period_s=5.0)
    process.start()
    try:
        with OrthancClient.from_settings(settings) as sync_client:
            [ds] = _series(sync_client, 1)

        async def scenario() -> list[object]:
            client = OrthancStreamingClient.from_settings(settings)
            outcomes: list[object] = [(await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT))[0]]
            process.stop()
            try:
                await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT)
            except OrthancUnavailable as exc:
                outcomes.append((exc.status_code, "unreachable" in str(exc)))
            process.start()
            outcomes.append((await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT))[0])
            # A restart between two requests leaves a dead connection in the pool: retried, not an error.
            process.stop()
            process.start()
            outcomes.append((await client.get_bytes(_frame_path(ds), headers=FRAME_ACCEPT))[0])
            outcomes.append(client.connections_opened)
            await client.aclose()
            return outcomes

        assert asyncio.run(scenario()) == [200, (503, True), 200, 200, 3]
    finally:
        process.stop()


def test_unreachable_is_503_and_a_silent_upstream_is_504() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (backlog) but never answers
        port = silent.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]  # bound, not listening: connection refused

        async def outcome(url: str) -> tuple[int, str]:
            client = OrthancStreamingClient(url, "pacslabel", "secret", timeout=0.5)
            try:
                await client.get_bytes("studies")
            except OrthancUnavailable as exc:
                return exc.status_code, str(exc)
            finally:
                await client.aclose()
            raise AssertionError("no error")

        refused = asyncio.run(outcome(f"http://127.0.0.1:{closed_port}"))
        stalled = asyncio.run(outcome(f"http://127.0.0.1:{port}"))
    assert refused[0] == 503 and "unreachable" in refused[1]
    assert stalled[0] == 504 and "did not answer" in stalled[1]


def test_paths_and_headers_that_could_smuggle_a_request_are_refused(orthanc: RunningOrthanc) -> None:
    client = _client(orthanc)

    async def attempt(path: str, headers: dict[str, str]) -> None:
        await client.get_bytes(path, headers=headers)

    with pytest.raises(ValueError, match="relative DICOMweb path"):
        asyncio.run(attempt("../tools/reset", {}))
    with pytest.raises(ValueError, match="line break"):
        asyncio.run(attempt("studies", {"Accept": "application/dicom+json\r\nX-Injected: 1"}))


def test_an_answer_that_is_not_http_is_a_502() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer_garbage() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()

        async def outcome() -> OrthancError:
            client = OrthancStreamingClient(f"http://127.0.0.1:{server.getsockname()[1]}", "u", "p", timeout=5)
            try:
                await client.get_bytes("studies")
            except OrthancError as exc:
                return exc
            finally:
                await client.aclose()
            raise AssertionError("no error")

        error = asyncio.run(outcome())
        thread.join(5)
    assert error.status_code == 502 and "not HTTP" in str(error)
