"""The read side of the DICOMweb gateway against a real Orthanc: blinding at every door (QIDO at each
level, WADO by UID, metadata, frames, rendered, bulk data), 401/403, byte-identical frames, Content-Type
pass-through, BulkDataURIs at the gateway, pagination over the visible set, audit, gzip, Orthanc down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from sqlalchemy import select

from pacslabel.audit.models import AuditEvent
from pacslabel.catalog.models import CatalogSeries
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.dicomweb import fast_frames, raw_frames, routes
from pacslabel.dicomweb.metadata_cache import SERIES_METADATA_CACHE, invalidate_series
from tests.dicomweb.gateway_world import (
    OrthancWorld,
    build_database,
    build_orthanc_world,
    free_port,
    gateway_app,
    serve,
)
from tests.fixtures.database import make_test_settings
from tests.fixtures.orthanc import RunningOrthanc

JSON = {"Accept": "application/dicom+json"}
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture(scope="module")
def world(orthanc: RunningOrthanc) -> OrthancWorld:
    return build_orthanc_world(orthanc.client)


class Gateway:
    def __init__(self, client: TestClient, tokens: dict[str, str], db_url: str) -> None:
        self.client = client
        self.tokens = tokens
        self.db_url = db_url

    def get(self, user: str | None, path: str, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or JSON)  # type: ignore[call-overload]
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return self.client.get("/dicomweb" + path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def uids(self, user: str, path: str, tag: str = "0020000E", **params: str) -> set[str]:
        response = self.get(user, path, params=params)
        assert response.status_code == 200, response.text
        return {r[tag]["Value"][0] for r in response.json()}


def _settings(tmp_path: Path, db_url: str, orthanc: RunningOrthanc, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"database_url": db_url, "orthanc_url": orthanc.url,
                                 "orthanc_password": orthanc.settings.secret("orthanc_password")}
    values.update(overrides)
    return make_test_settings(tmp_path / "var", **values)


@pytest.fixture
def gateway(tmp_path: Path, db_url: str, orthanc: RunningOrthanc, world: OrthancWorld) -> Iterator[Gateway]:
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        tokens = build_database(session, world)
    engine.dispose()
    with TestClient(gateway_app(_settings(tmp_path, db_url, orthanc))) as client:
        yield Gateway(client, tokens, db_url)


def _orthanc_get(orthanc: RunningOrthanc, path: str, accept: str) -> httpx.Response:
    return httpx.get(f"{orthanc.url}/dicom-web/{path}", headers={"Accept": accept},
                     auth=("pacslabel", orthanc.settings.secret("orthanc_password")))


def _parts(response: httpx.Response) -> list[bytes]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n" + response.content)
    return [part.get_payload(decode=True) for part in message.iter_parts()]


# Blinding ------------------------------------------------------------------------------------------------

def test_qido_shows_each_user_only_the_series_of_their_tasks(gateway: Gateway, world: OrthancWorld) -> None:
    st = world.study
    path = f"/studies/{st}/series"
    source, a, b = world.source.series, world.seg_a.series, world.seg_b.series
    assert gateway.uids("reader_a", path) == {source, a}
    assert gateway.uids("reader_b", path) == {source, b}
    assert gateway.uids("reviewer", path) == {source, a, b}  # the reads under review
    assert gateway.uids("arbiter", path) == {source, a, b}  # the unblinded view
    assert gateway.uids("admin", path) == {source, a, b, world.other_ct.series, world.foreign_seg.series}
    assert gateway.uids("reader_c", path) == set()
    # The same at the top-level /series and with a Modality filter.
    assert gateway.uids("reader_b", "/series", StudyInstanceUID=st) == {source, b}
    assert gateway.uids("reader_b", "/series") == {source, b}
    assert gateway.uids("reader_b", path, Modality="SEG") == {b}


def test_qido_studies_and_instances_are_filtered(gateway: Gateway, world: OrthancWorld) -> None:
    both = f"{world.study},{world.outside.study}"
    assert gateway.uids("reader_a", "/studies", "0020000D") == {world.study}
    assert gateway.uids("reader_a", "/studies", "0020000D", StudyInstanceUID=both) == {world.study}
    assert gateway.uids("reader_a", "/studies", "0020000D", StudyInstanceUID=world.outside.study) == set()
    assert gateway.uids("reader_c", "/studies", "0020000D") == set()
    assert gateway.uids("admin", "/studies", "0020000D", StudyInstanceUID=both) == {world.study, world.outside.study}

    sops = "00080018"
    visible_b = set(world.source.sops) | set(world.seg_b.sops)
    assert gateway.uids("reader_b", f"/studies/{world.study}/instances", sops) == visible_b
    assert gateway.uids("reader_b", "/instances", sops, StudyInstanceUID=world.study) == visible_b
    assert gateway.uids("reader_b", "/instances", sops, SOPInstanceUID=world.seg_a.sops[0]) == set()
    assert gateway.uids("reader_b", f"/studies/{world.study}/series/{world.seg_a.series}/instances", sops) == set()
    assert gateway.uids("reader_a", f"/studies/{world.study}/series/{world.seg_a.series}/instances",
                        sops) == set(world.seg_a.sops)
    assert gateway.uids("reader_a", f"/studies/{world.outside.study}/series", "0020000E") == set()


def test_wado_of_anything_hidden_is_404_like_something_absent(gateway: Gateway, world: OrthancWorld) -> None:
    st, a = world.study, world.seg_a
    sop = a.sops[0]
    hidden = [
        f"/studies/{st}/series/{a.series}",
        f"/studies/{st}/series/{a.series}/metadata",
        f"/studies/{st}/series/{a.series}/instances/{sop}",
        f"/studies/{st}/series/{a.series}/instances/{sop}/metadata",
        f"/studies/{st}/series/{a.series}/instances/{sop}/frames/1",
        f"/studies/{st}/series/{a.series}/instances/{sop}/rendered",
        f"/studies/{st}/series/{a.series}/instances/{sop}/frames/1/rendered",
        f"/studies/{st}/series/{a.series}/rendered",
        f"/studies/{st}/series/{a.series}/instances/{sop}/bulk/7fe00010",
        f"/studies/{st}/series/{world.foreign_seg.series}/metadata",
        f"/studies/{st}/series/{world.other_ct.series}/metadata",
        f"/studies/{world.outside.study}",
        f"/studies/{world.outside.study}/metadata",
        f"/studies/{world.outside.study}/series/{world.outside.series}/metadata",
    ]
    absent = gateway.get("reader_b", f"/studies/{st}/series/1.2.3.4/metadata")
    assert absent.status_code == 404
    for path in hidden:
        response = gateway.get("reader_b", path, headers={"Accept": "*/*"})
        assert response.status_code == 404, path
        assert response.json() == absent.json(), path  # same answer: existence is not revealed
        assert response.headers["content-type"] == "application/json"
    # The owner and the admin get them.
    assert gateway.get("reader_a", f"/studies/{st}/series/{a.series}/metadata").status_code == 200
    assert gateway.get("admin", f"/studies/{st}/series/{world.foreign_seg.series}/metadata").status_code == 200


def test_study_metadata_and_study_retrieve_carry_only_visible_series(gateway: Gateway, world: OrthancWorld) -> None:
    st = world.study
    metadata = gateway.get("reader_b", f"/studies/{st}/metadata")
    assert metadata.status_code == 200 and metadata.headers["content-type"] == "application/dicom+json"
    assert {i["0020000E"]["Value"][0] for i in metadata.json()} == {world.source.series, world.seg_b.series}
    everything = gateway.get("admin", f"/studies/{st}/metadata").json()
    assert len(everything) == len(world.source.sops) + 2 + 3

    accept = 'multipart/related; type="application/dicom"'
    study = gateway.get("reader_a", f"/studies/{st}", headers={"Accept": accept})
    assert study.status_code == 200, study.text
    assert study.headers["content-type"].startswith('multipart/related; type="application/dicom"; boundary=')
    sops = {str(pydicom.dcmread(BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in _parts(study)}
    assert sops == set(world.source.sops) | set(world.seg_a.sops)
    full = gateway.get("admin", f"/studies/{world.outside.study}", headers={"Accept": accept})
    assert len(_parts(full)) == len(world.outside.sops)


# Transport -------------------------------------------------------------------------------------------------

def test_unauthenticated_is_401_and_the_ml_role_sees_nothing_unreleased(gateway: Gateway, world: OrthancWorld
                                                                         ) -> None:
    response = gateway.get(None, "/studies")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert gateway.get(None, f"/studies/{world.study}/series/{world.source.series}/metadata").status_code == 401
    response = gateway.client.get("/dicomweb/studies", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    # Nothing of this world is released (no final label): the ML role gets an empty answer and 404s.
    response = gateway.get("ml", "/studies")
    assert response.status_code == 200 and response.json() == []
    assert gateway.get("ml", f"/studies/{world.study}/series/{world.source.series}/metadata").status_code == 404


def test_frames_are_byte_identical_and_content_type_is_orthancs(gateway: Gateway, world: OrthancWorld,
                                                                orthanc: RunningOrthanc) -> None:
    st, se, sop = world.study, world.source.series, world.source.sops[1]
    path = f"studies/{st}/series/{se}/instances/{sop}/frames/1"
    ours = gateway.get("reader_a", "/" + path, headers={"Accept": FRAME_ACCEPT, "Accept-Encoding": "gzip"})
    theirs = _orthanc_get(orthanc, path, FRAME_ACCEPT)
    assert ours.status_code == theirs.status_code == 200
    assert "content-encoding" not in ours.headers  # frames are never compressed
    # Orthanc draws a new boundary per answer: everything else of the Content-Type is identical.
    strip = lambda ct: ct.split("boundary=")[0]  # noqa: E731
    assert strip(ours.headers["content-type"]) == strip(theirs.headers["content-type"])
    assert "transfer-syntax=1.2.840.10008.1.2.1" in ours.headers["content-type"]
    assert _parts(ours) == _parts(theirs)
    assert _parts(ours)[0] == world.source_datasets[1].PixelData
    # DICOMweb 1.7 cannot negotiate: a list is answered with the client's first choice, and
    # dicomweb-client's default `type="*/*"` with the uncompressed frames.
    for accept in (f"{FRAME_ACCEPT}, multipart/related; type=image/jls", 'multipart/related; type="*/*"'):
        listed = gateway.get("reader_a", "/" + path, headers={"Accept": accept})
        assert listed.status_code == 200 and _parts(listed) == _parts(theirs), accept
    # Orthanc's own 4xx answers reach the client as JSON with Orthanc's message.
    bad = gateway.get("reader_a", "/" + path, headers={"Accept": "multipart/related; type=text/plain"})
    assert 400 <= bad.status_code < 500 and bad.json()["detail"], bad.text
    assert gateway.get("reader_a", f"/{path[:-1]}x").status_code in (400, 422)


def test_small_answers_go_out_whole_and_large_ones_stream(gateway: Gateway, world: OrthancWorld,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    st, se = world.study, world.source.series
    frame_path = f"/studies/{st}/series/{se}/instances/{world.source.sops[0]}/frames/1"
    frame = gateway.get("reader_a", frame_path, headers={"Accept": FRAME_ACCEPT})
    assert frame.status_code == 200 and int(frame.headers["content-length"]) == len(frame.content)
    assert _parts(frame)[0] == world.source_datasets[0].PixelData
    # Above the one-read size an answer is streamed (no Content-Length of ours), and arrives intact.
    monkeypatch.setattr(routes, "ONE_READ_MAX_BYTES", 1024)
    accept = 'multipart/related; type="application/dicom"'
    series = gateway.get("reader_a", f"/studies/{st}/series/{se}", headers={"Accept": accept})
    assert series.status_code == 200 and "content-length" not in series.headers
    assert len(series.content) > 1024
    sops = {str(pydicom.dcmread(BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in _parts(series)}
    assert sops == set(world.source.sops)
    streamed_frame = gateway.get("reader_a", frame_path, headers={"Accept": FRAME_ACCEPT})
    assert _parts(streamed_frame) == _parts(frame)
    # Orthanc's error answers are not streamed but mapped (status and Orthanc's message).
    bad = gateway.get("reader_a", frame_path, headers={"Accept": "multipart/related; type=text/plain"})
    assert bad.status_code == 400 and "text/plain" in bad.json()["detail"]


def test_frames_of_a_recently_authenticated_credential_take_the_fast_path_with_the_same_rules(
        gateway: Gateway, world: OrthancWorld) -> None:
    st, se, sop = world.study, world.source.series, world.source.sops[0]
    path = f"/studies/{st}/series/{se}/instances/{sop}/frames/1"
    first = gateway.get("reader_a", path, headers={"Accept": FRAME_ACCEPT})  # authenticates: snapshot cached
    answered, raw_answered = fast_frames.STATS["answered"], raw_frames.STATS["answered"]
    again = gateway.get("reader_a", path, headers={"Accept": FRAME_ACCEPT})
    assert fast_frames.STATS["answered"] == answered + 1
    assert again.status_code == 200 and _parts(again) == _parts(first)
    assert again.headers["content-type"].split("boundary=")[0] == first.headers["content-type"].split("boundary=")[0]
    # An uncompressed CT frame comes from Orthanc's core REST API; its part points at the gateway.
    assert raw_frames.STATS["answered"] == raw_answered + 1
    assert f"Content-Location: http://testserver/dicomweb/{path.lstrip('/')}".encode() in again.content
    # What the snapshot does not allow, an unknown credential, a bad frame list and Orthanc's errors all go to
    # the route, with its answers.
    a_seg = f"/studies/{st}/series/{world.seg_a.series}/instances/{world.seg_a.sops[0]}/frames/1"
    assert gateway.get("reader_b", a_seg, headers={"Accept": FRAME_ACCEPT}).status_code == 404
    assert gateway.get("reader_b", a_seg, headers={"Accept": FRAME_ACCEPT}).status_code == 404
    forged = gateway.client.get("/dicomweb" + path, headers={"Authorization": "Bearer forged", "Accept": FRAME_ACCEPT})
    assert forged.status_code == 401
    assert gateway.get("reader_a", path[:-1] + "0", headers={"Accept": FRAME_ACCEPT}).status_code == 400
    missing = f"/studies/{st}/series/{se}/instances/{sop}/frames/99"
    assert gateway.get("reader_a", missing, headers={"Accept": FRAME_ACCEPT}).status_code in (400, 404)
    assert fast_frames.STATS["answered"] == answered + 1


def test_logout_stops_the_frame_fast_path_for_that_cookie_at_once(gateway: Gateway, world: OrthancWorld) -> None:
    from pacslabel.users import repository as user_repository
    from pacslabel.users.service import open_web_session
    from pacslabel.web.deps import SESSION_COOKIE

    engine = create_db_engine(gateway.db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        reader = user_repository.get_user_by_name(session, "reader_a")
        assert reader is not None
        cookie = open_web_session(session, reader, 3600)
    engine.dispose()
    path = f"/dicomweb/studies/{world.study}/series/{world.source.series}/instances/{world.source.sops[0]}/frames/1"
    headers = {"Accept": FRAME_ACCEPT, "Cookie": f"{SESSION_COOKIE}={cookie}"}
    assert gateway.client.get(path, headers=headers).status_code == 200  # authenticates: snapshot cached
    answered = fast_frames.STATS["answered"]
    assert gateway.client.get(path, headers=headers).status_code == 200
    assert fast_frames.STATS["answered"] == answered + 1
    assert gateway.client.post("/api/auth/logout", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}).status_code == 204
    assert gateway.client.get(path, headers=headers).status_code == 401
    assert fast_frames.STATS["answered"] == answered + 1


def test_bulkdata_uris_point_at_the_gateway_and_resolve(gateway: Gateway, world: OrthancWorld,
                                                        orthanc: RunningOrthanc) -> None:
    response = gateway.get("reader_a", f"/studies/{world.study}/series/{world.source.series}/metadata")
    body = response.text
    assert "dicom-web" not in body and "8042" not in body and orthanc.url not in body
    uris = [v["BulkDataURI"] for inst in response.json() for v in inst.values()
            if "BulkDataURI" in v]
    assert uris and all(u.startswith(f"http://testserver/dicomweb/studies/{world.study}/") for u in uris)
    pixel = next(u for u in uris if u.endswith("7fe00010"))
    bulk = gateway.get("reader_a", pixel.removeprefix("http://testserver/dicomweb"),
                       headers={"Accept": "multipart/related; type=application/octet-stream"})
    assert bulk.status_code == 200 and _parts(bulk)[0] in {d.PixelData for d in world.source_datasets}
    # QIDO RetrieveURLs too.
    study = gateway.get("reader_a", "/studies").json()[0]
    assert study["00081190"]["Value"][0] == f"http://testserver/dicomweb/studies/{world.study}"


def test_pagination_counts_only_the_visible_set(gateway: Gateway, world: OrthancWorld) -> None:
    path = f"/studies/{world.study}/instances"
    seen: list[str] = []
    for offset in range(0, 8, 2):
        page = gateway.get("reader_b", path, params={"limit": "2", "offset": str(offset)}).json()
        assert len(page) == min(2, max(0, 5 - offset))
        seen += [r["00080018"]["Value"][0] for r in page]
    assert sorted(seen) == sorted(set(world.source.sops) | set(world.seg_b.sops))
    series_pages = [gateway.get("reader_b", f"/studies/{world.study}/series",
                                params={"limit": "1", "offset": str(o)}).json() for o in range(3)]
    assert [len(p) for p in series_pages] == [1, 1, 0]
    assert gateway.get("reader_b", path, params={"limit": "x"}).status_code == 400


def test_series_metadata_is_cached_gzipped_and_invalidated(gateway: Gateway, world: OrthancWorld) -> None:
    st, se = world.study, world.source.series
    invalidate_series(st, se)
    misses = SERIES_METADATA_CACHE.misses
    plain = gateway.get("reader_a", f"/studies/{st}/series/{se}/metadata",
                        headers={**JSON, "Accept-Encoding": "identity"})
    packed = gateway.client.get(f"/dicomweb/studies/{st}/series/{se}/metadata",
                                headers={**JSON, "Accept-Encoding": "gzip",
                                         "Authorization": f"Bearer {gateway.tokens['reader_a']}"})
    assert SERIES_METADATA_CACHE.misses == misses + 1  # the second answer came from the cache
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    # Gzipped once, when a client first took gzip, and kept next to the plain rendering.
    entry = SERIES_METADATA_CACHE.get(st, se)
    assert entry is not None and entry.renderings["http://testserver/dicomweb/"][1] is not None
    assert packed.json() == plain.json() and len(plain.json()) == len(world.source.sops)
    invalidate_series(st, se)
    gateway.get("reader_a", f"/studies/{st}/series/{se}/metadata")
    assert SERIES_METADATA_CACHE.misses == misses + 2


def test_cached_series_metadata_is_refreshed_when_ingest_lands_another_instance_of_the_series(
        gateway: Gateway, world: OrthancWorld, orthanc: RunningOrthanc) -> None:
    st, se = world.study, world.other_ct.series
    path = f"/studies/{st}/series/{se}/metadata"
    sops = lambda response: {i["00080018"]["Value"][0] for i in response.json()}  # noqa: E731
    invalidate_series(st, se)
    assert sops(gateway.get("admin", path)) == set(world.other_ct.sops)
    late = orthanc.client.retrieve_instance(st, se, world.other_ct.sops[0])
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    late.InstanceNumber = 3
    buffer = BytesIO()
    late.save_as(buffer, enforce_file_format=True)
    stored = orthanc.client.store_instance(buffer.getvalue())
    try:
        # In Orthanc but not yet recorded by ingest (it records after the store): the cached answer stands.
        misses = SERIES_METADATA_CACHE.misses
        assert sops(gateway.get("admin", path)) == set(world.other_ct.sops)
        assert SERIES_METADATA_CACHE.misses == misses
        # Recorded (by an ingest worker, in another process): the next request fetches the series again.
        engine = create_db_engine(gateway.db_url)
        with session_scope(make_sessionmaker(engine)) as session:
            row = session.scalars(select(CatalogSeries).where(CatalogSeries.series_instance_uid == se)).one()
            row.instance_count += 1
        engine.dispose()
        assert sops(gateway.get("admin", path)) == {*world.other_ct.sops, str(late.SOPInstanceUID)}
        assert sops(gateway.get("admin", path)) == {*world.other_ct.sops, str(late.SOPInstanceUID)}  # cached again
    finally:
        httpx.delete(f"{orthanc.url}/instances/{stored.orthanc_id}",
                     auth=(orthanc.settings.orthanc_username, orthanc.settings.secret("orthanc_password")))
        invalidate_series(st, se)


@pytest.mark.parametrize("level", ["series", "study"])
def test_cached_annotation_series_metadata_shows_a_version_saved_by_another_web_process(
        gateway: Gateway, world: OrthancWorld, orthanc: RunningOrthanc, level: str) -> None:
    from pacslabel.annotations.models import AnnotationVersion
    from tests.dicomweb.gateway_world import TASK_IDS, _seg

    st, se = world.study, world.seg_a.series
    path = f"/studies/{st}/series/{se}/metadata" if level == "series" else f"/studies/{st}/metadata"
    sops = lambda response: {i["00080018"]["Value"][0] for i in response.json()  # noqa: E731
                             if i["0020000E"]["Value"][0] == se}
    invalidate_series(st, se)
    assert sops(gateway.get("reader_a", path)) == set(world.seg_a.sops)
    # Another web process stores version 2 (Orthanc first, then the row): this process's cache is not told.
    second = _seg(world.source_datasets, se, "reader_a")
    buffer = BytesIO()
    second.save_as(buffer, enforce_file_format=True)
    stored = orthanc.client.store_instance(buffer.getvalue())
    try:
        engine = create_db_engine(gateway.db_url)
        with session_scope(make_sessionmaker(engine)) as session:
            first = session.scalars(select(AnnotationVersion).where(
                AnnotationVersion.task_id == TASK_IDS["reader_a"])).one()
            session.add(AnnotationVersion(
                task_id=first.task_id, study_instance_uid=st, series_instance_uid=se,
                sop_instance_uid=str(second.SOPInstanceUID), sop_class_uid=first.sop_class_uid, modality="SEG",
                version=2, author_id=first.author_id, author_role="annotator", origin="ohif",
                sha256="0" * 64, byte_size=1, repairs=[], predecessor_id=first.id))
        engine.dispose()
        assert sops(gateway.get("reader_a", path)) == {*world.seg_a.sops, str(second.SOPInstanceUID)}
    finally:
        httpx.delete(f"{orthanc.url}/instances/{stored.orthanc_id}",
                     auth=(orthanc.settings.orthanc_username, orthanc.settings.secret("orthanc_password")))
        invalidate_series(st, se)


def test_series_metadata_of_a_client_without_gzip_is_never_gzipped(gateway: Gateway, world: OrthancWorld) -> None:
    st, se = world.study, world.source.series
    invalidate_series(st, se)
    for _ in range(2):
        plain = gateway.get("reader_a", f"/studies/{st}/series/{se}/metadata",
                            headers={**JSON, "Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
    entry = SERIES_METADATA_CACHE.get(st, se)
    assert entry is not None and entry.renderings["http://testserver/dicomweb/"] == (plain.content, None)


def test_series_metadata_is_orthancs_answer_compacted_with_gateway_urls(gateway: Gateway, world: OrthancWorld,
                                                                         orthanc: RunningOrthanc) -> None:
    st, se = world.study, world.source.series
    invalidate_series(st, se)
    ours = gateway.get("reader_a", f"/studies/{st}/series/{se}/metadata",
                       headers={**JSON, "Accept-Encoding": "identity"})
    theirs = _orthanc_get(orthanc, f"studies/{st}/series/{se}/metadata", "application/dicom+json")
    assert b"\n" not in ours.content and b"\t" not in ours.content and len(ours.content) < len(theirs.content)
    orthanc_root = theirs.text.split('"BulkDataURI" : "', 1)[1].split("studies/", 1)[0]
    expected = json.loads(theirs.text.replace(orthanc_root, "http://testserver/dicomweb/"))
    by_sop = lambda items: sorted(items, key=lambda i: i["00080018"]["Value"][0])  # noqa: E731
    assert by_sop(ours.json()) == by_sop(expected)


def test_a_study_view_is_audited_once_per_session(gateway: Gateway, world: OrthancWorld) -> None:
    st = world.study
    for _ in range(3):
        gateway.get("reader_a", f"/studies/{st}/series")
        gateway.get("reader_a", f"/studies/{st}/series/{world.source.series}/metadata")
    gateway.get("reader_a", f"/studies/{world.outside.study}/series")  # not visible: no event
    engine = create_db_engine(gateway.db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "study_view")).all()
        assert [(e.actor, e.object_id) for e in events] == [("reader_a", st)]
    engine.dispose()


def test_orthanc_down_is_503(tmp_path: Path, db_url: str, orthanc: RunningOrthanc, world: OrthancWorld) -> None:
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        tokens = build_database(session, world)
    engine.dispose()
    settings = _settings(tmp_path, db_url, orthanc, orthanc_url=f"http://127.0.0.1:{free_port()}")
    with TestClient(gateway_app(settings)) as client:
        auth = {"Authorization": f"Bearer {tokens['reader_a']}", **JSON}
        response = client.get("/dicomweb/studies", headers=auth)
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        frame = client.get(f"/dicomweb/studies/{world.study}/series/{world.source.series}/instances/"
                           f"{world.source.sops[0]}/frames/1", headers={**auth, "Accept": FRAME_ACCEPT})
        assert frame.status_code == 503


# dicomweb-client, unchanged, over a real server ------------------------------------------------------------

def test_dicomweb_client_works_unchanged_with_a_bearer_token(tmp_path: Path, db_url: str, orthanc: RunningOrthanc,
                                                             world: OrthancWorld) -> None:
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        tokens = build_database(session, world)
    engine.dispose()
    # dicomweb-client sends `Host` without the port; a deployment sets its public URL (as here).
    port = free_port()
    settings = _settings(tmp_path, db_url, orthanc, public_url=f"http://127.0.0.1:{port}")
    with serve(gateway_app(settings), port) as base:
        client = DICOMwebClient(url=f"{base}/dicomweb", headers={"Authorization": f"Bearer {tokens['reader_b']}"})
        studies = client.search_for_studies()
        assert [s["0020000D"]["Value"][0] for s in studies] == [world.study]
        series = client.search_for_series(world.study)
        assert {s["0020000E"]["Value"][0] for s in series} == {world.source.series, world.seg_b.series}
        instances = client.retrieve_series(world.study, world.source.series)
        assert sorted(str(d.SOPInstanceUID) for d in instances) == sorted(world.source.sops)
        frames = client.retrieve_instance_frames(world.study, world.source.series, world.source.sops[2], [1])
        assert frames[0] == world.source_datasets[2].PixelData
        metadata = client.retrieve_series_metadata(world.study, world.source.series)
        uri = next(v["BulkDataURI"] for v in metadata[0].values() if "BulkDataURI" in v)
        assert uri.startswith(f"{base}/dicomweb/")
        assert client.retrieve_bulkdata(uri)
        seg = client.retrieve_instance(world.study, world.seg_b.series, world.seg_b.sops[0])
        assert seg.Modality == "SEG"
        with pytest.raises(Exception) as hidden:
            client.retrieve_instance(world.study, world.seg_a.series, world.seg_a.sops[0])
        assert "404" in str(hidden.value)
