"""The ML role over DICOMweb, as an ML engineer works: a bearer token and dicomweb-client against /dicomweb
of a running pacslabel (uvicorn), a real Orthanc and both databases.

Proves: every released SEG is found (Modality=SEG), retrieved with its source series and rebuilt voxel by
voxel equal to what was saved; drafts, other readers' reads and unreleased items are invisible; the test split
is sealed at every door until an admin grants access (audited), open after, sealed again after revocation;
the release filters (ReferencedSeries, ReleasedSince) answer from the database; hostile input gets a precise
4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.audit.models import AuditEvent
from pacslabel.db import session_scope
from pacslabel.dicomweb.routes import invalidate_access
from tests.dicomweb.gateway_world import gateway_app, serve
from tests.export.world import ItemFacts, MlWorld, between, mask, ml_world
from tests.fixtures.orthanc import RunningOrthanc

JSON = {"Accept": "application/dicom+json"}
DICOM = {"Accept": 'multipart/related; type="application/dicom"'}
FRAMES = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}


@dataclass
class Served:
    world: MlWorld
    base: str  # http://127.0.0.1:port

    def client(self, user: str) -> DICOMwebClient:
        return DICOMwebClient(url=f"{self.base}/dicomweb", headers=self.world.headers(user))

    def get(self, user: str | None, path: str, headers: dict[str, str] | None = None,
            **params: str) -> httpx.Response:
        sent = dict(headers or JSON)
        if user is not None:
            sent["Authorization"] = f"Bearer {self.world.tokens[user]}"
        return httpx.get(f"{self.base}{path}", headers=sent, params=params, timeout=30)

    def api(self, method: str, user: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.base}/api{path}", headers=self.world.headers(user),
                             timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def served(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[Served]:
    invalidate_access()  # snapshots are per process and keyed by token: start clean
    settings = orthanc.settings.model_copy(update={"database_url": db_url, "var_dir": tmp_path / "var"})
    with ml_world(orthanc.client, db_url) as world, serve(gateway_app(settings)) as base:
        yield Served(world, base)


def _uids(results: list[dict[str, object]], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}  # type: ignore[index]


def _rebuild(client: DICOMwebClient, seg: Dataset) -> np.ndarray:
    """What an ML engineer does: follow the SEG's reference to its source series, fetch it, rebuild."""
    [referenced] = seg.ReferencedSeriesSequence
    source = client.retrieve_series(str(seg.StudyInstanceUID), str(referenced.SeriesInstanceUID))
    return read_label_array(seg, SourceSeries.from_instances(source))


# What an ML engineer does ----------------------------------------------------------------------------------

def test_an_ml_engineer_finds_retrieves_and_rebuilds_every_released_seg_voxel_by_voxel(served: Served) -> None:
    world, client = served.world, served.client("ml1")
    items = world.items
    found = client.search_for_series(search_filters={"Modality": "SEG"})
    assert _uids(found, "0020000E") == world.released("train", "validation")
    assert len(found) == 2
    assert _uids(client.search_for_studies(), "0020000D") == {items["train"].study, items["validation"].study}

    by_series = {item.final_series: item for item in items.values()}
    for result in found:
        study, series = result["0020000D"]["Value"][0], result["0020000E"]["Value"][0]
        item = by_series[series]
        [seg] = client.retrieve_series(study, series)  # the released version only, never its draft
        assert seg.SOPInstanceUID == item.final_sop and seg.Modality == "SEG"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == item.source_series
        rebuilt = _rebuild(client, seg)
        assert item.final_array is not None and rebuilt.shape == item.final_array.shape == (12, 64, 64)
        np.testing.assert_array_equal(rebuilt, item.final_array)
        assert int((rebuilt > 0).sum()) == int((item.final_array > 0).sum()) > 0
        # The other doors give the same object.
        assert [d.SOPInstanceUID for d in client.iter_series(study, series)] == [item.final_sop]
        [metadata] = client.retrieve_series_metadata(study, series)
        assert metadata["00080018"]["Value"] == [item.final_sop]
        instance = client.retrieve_instance_metadata(study, series, item.final_sop)
        assert instance["00080060"]["Value"] == ["SEG"]
        assert client.retrieve_instance(study, series, item.final_sop).SOPInstanceUID == item.final_sop
        # A released study shows its source series and its final label, nothing else.
        assert _uids(client.search_for_series(study), "0020000E") == {item.source_series, series}
        assert len(client.search_for_instances(study, item.source_series)) == len(item.datasets) == 12
        frame = client.retrieve_instance_frames(study, item.source_series,
                                                str(item.datasets[0].SOPInstanceUID), [1])
        assert frame[0] == item.datasets[0].PixelData  # byte-identical source pixels


def test_drafts_other_readers_reads_and_unreleased_items_are_invisible(served: Served) -> None:
    world = served.world
    train, validation, pending = world.items["train"], world.items["validation"], world.items["unreleased"]
    [(draft_series, draft_sop)] = train.hidden
    assert draft_series == train.final_series and draft_sop != train.final_sop
    st = train.study
    # The draft shares the released version's series: every door shows the one and hides the other.
    assert served.get("ml1", f"/dicomweb/studies/{st}/series/{draft_series}/instances/{draft_sop}",
                      DICOM).status_code == 404
    assert served.get("ml1", f"/dicomweb/studies/{st}/series/{draft_series}/instances/{draft_sop}/metadata"
                      ).status_code == 404
    assert served.get("ml1", f"/dicomweb/studies/{st}/series/{draft_series}/instances/{draft_sop}/frames/1",
                      FRAMES).status_code == 404
    listed = served.get("ml1", f"/dicomweb/studies/{st}/series/{draft_series}/instances").json()
    assert _uids(listed, "00080018") == {train.final_sop}
    assert _uids(served.get("ml1", "/dicomweb/instances", SeriesInstanceUID=draft_series).json(),
                 "00080018") == {train.final_sop}
    assert _uids(served.get("ml1", f"/dicomweb/studies/{st}/metadata").json(), "00080018") == (
        {train.final_sop} | {str(d.SOPInstanceUID) for d in train.datasets})
    whole_study = served.client("ml1").retrieve_study(st)
    assert {d.SOPInstanceUID for d in whole_study} == {train.final_sop} | {str(d.SOPInstanceUID)
                                                                          for d in train.datasets}
    # The reader still sees both of their versions (the restriction is the ML role's).
    own = served.get("reader1", f"/dicomweb/studies/{st}/series/{draft_series}/instances").json()
    assert _uids(own, "00080018") == {train.final_sop, draft_sop}

    # The individual reads behind the consensus and the unreleased item's read: absent everywhere.
    for item in (validation, pending):
        for series, sop in item.hidden:
            base = f"/dicomweb/studies/{item.study}/series/{series}"
            assert served.get("ml1", base, DICOM).status_code == 404
            assert served.get("ml1", base + "/metadata").status_code == 404
            assert served.get("ml1", f"{base}/instances/{sop}", DICOM).status_code == 404
            assert served.get("ml1", base + "/instances").json() == []
    assert served.get("ml1", "/dicomweb/studies", StudyInstanceUID=pending.study).json() == []
    assert served.get("ml1", f"/dicomweb/studies/{pending.study}/series/{pending.source_series}",
                      DICOM).status_code == 404
    assert served.get("ml1", f"/dicomweb/studies/{pending.study}", DICOM).status_code == 404
    assert _uids(served.get("ml1", f"/dicomweb/studies/{validation.study}/series").json(), "0020000E") == {
        validation.source_series, validation.final_series}


# The sealed test split --------------------------------------------------------------------------------------

def _doors(served: Served, user: str, item: ItemFacts) -> dict[str, int]:
    """How many objects of ``item`` each door shows ``user`` (QIDO: results; WADO: 1 if 200, 0 if 404)."""
    st, src, seg, sop = item.study, item.source_series, item.final_series, item.final_sop
    src_sop = str(item.datasets[0].SOPInstanceUID)
    qido = {
        "qido studies": ("/dicomweb/studies", {"StudyInstanceUID": st}),
        "qido series": ("/dicomweb/series", {"StudyInstanceUID": st}),
        "qido SEG series": ("/dicomweb/series", {"Modality": "SEG", "StudyInstanceUID": st}),
        "qido series in study": (f"/dicomweb/studies/{st}/series", {}),
        "qido instances": ("/dicomweb/instances", {"StudyInstanceUID": st}),
        "qido instances in study": (f"/dicomweb/studies/{st}/instances", {}),
        "qido instances in series": (f"/dicomweb/studies/{st}/series/{src}/instances", {}),
        "qido referenced series": ("/dicomweb/series", {"ReferencedSeries": src}),
    }
    counts = {}
    for door, (path, params) in qido.items():
        response = served.get(user, path, **params)
        assert response.status_code == 200, (door, response.text)
        counts[door] = len(response.json())
    wado = {
        "study": (f"/dicomweb/studies/{st}", DICOM),
        "source series": (f"/dicomweb/studies/{st}/series/{src}", DICOM),
        "seg series": (f"/dicomweb/studies/{st}/series/{seg}", DICOM),
        "seg instance": (f"/dicomweb/studies/{st}/series/{seg}/instances/{sop}", DICOM),
        "source frame": (f"/dicomweb/studies/{st}/series/{src}/instances/{src_sop}/frames/1", FRAMES),
        "seg frame": (f"/dicomweb/studies/{st}/series/{seg}/instances/{sop}/frames/1", FRAMES),
        "study metadata": (f"/dicomweb/studies/{st}/metadata", JSON),
        "series metadata": (f"/dicomweb/studies/{st}/series/{seg}/metadata", JSON),
        "instance metadata": (f"/dicomweb/studies/{st}/series/{src}/instances/{src_sop}/metadata", JSON),
    }
    for door, (path, headers) in wado.items():
        response = served.get(user, path, headers)
        assert response.status_code in (200, 404), (door, response.status_code, response.text)
        if response.status_code == 404:
            assert response.json()["detail"] == "not found"  # hidden and absent look the same
        counts[door] = int(response.status_code == 200)
    return counts


SEALED = {"qido studies": 0, "qido series": 0, "qido SEG series": 0, "qido series in study": 0,
          "qido instances": 0, "qido instances in study": 0, "qido instances in series": 0,
          "qido referenced series": 0, "study": 0, "source series": 0, "seg series": 0, "seg instance": 0,
          "source frame": 0, "seg frame": 0, "study metadata": 0, "series metadata": 0, "instance metadata": 0}
OPEN = {"qido studies": 1, "qido series": 2, "qido SEG series": 1, "qido series in study": 2,
        "qido instances": 13, "qido instances in study": 13, "qido instances in series": 12,
        "qido referenced series": 1, "study": 1, "source series": 1, "seg series": 1, "seg instance": 1,
        "source frame": 1, "seg frame": 1, "study metadata": 1, "series metadata": 1, "instance metadata": 1}


def _audit(served: Served, action: str) -> list[AuditEvent]:
    with session_scope(served.world.sessions) as session:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))
        session.expunge_all()
    return rows


def test_the_test_split_is_sealed_at_every_door_until_an_admin_grants_access_and_after_revocation(
        served: Served) -> None:
    world = served.world
    test = world.items["test"]
    slug = world.project_slug
    assert _doors(served, "ml1", test) == SEALED
    assert served.world.items["test"].final_series not in _uids(
        served.client("ml1").search_for_series(search_filters={"Modality": "SEG"}), "0020000E")

    # Only an admin may open it; the grant is audited with actor, user and reason.
    denied = served.api("POST", "ml1", f"/projects/{slug}/test-access", json={"username": "ml1", "reason": "x"})
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    granted = served.api("POST", "admin1", f"/projects/{world.project_id}/test-access",
                         json={"username": "ml1", "reason": "final evaluation of model v3"})
    assert granted.status_code == 201, granted.text
    assert granted.json()["username"] == "ml1" and granted.json()["granted_by"] == "admin1"
    [event] = _audit(served, "test_access_grant")
    assert (event.actor, event.object_type, event.object_id) == ("admin1", "project", str(world.project_id))
    assert event.detail is not None and event.detail["user"] == "ml1"
    assert event.detail["reason"] == "final evaluation of model v3"

    # Open for ml1 at once (no stale cached "no"), still sealed for ml2.
    assert _doors(served, "ml1", test) == OPEN
    assert _doors(served, "ml2", test) == SEALED
    client = served.client("ml1")
    assert _uids(client.search_for_series(search_filters={"Modality": "SEG"}), "0020000E") == world.released(
        "train", "validation", "test")
    [seg] = client.retrieve_series(test.study, str(test.final_series))
    assert test.final_array is not None
    np.testing.assert_array_equal(_rebuild(client, seg), test.final_array)
    listed = served.api("GET", "admin1", f"/projects/{slug}/test-access")
    assert [g["username"] for g in listed.json()["grants"]] == ["ml1"]

    # Revoking seals it again, at once, and is audited too.
    revoked = served.api("DELETE", "admin1", f"/projects/{slug}/test-access/ml1")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    [event] = _audit(served, "test_access_revoke")
    assert event.actor == "admin1" and event.detail is not None and event.detail["user"] == "ml1"
    assert _doors(served, "ml1", test) == SEALED
    assert served.api("GET", "admin1", f"/projects/{slug}/test-access").json()["grants"] == []
    history = served.api("GET", "admin1", f"/projects/{slug}/test-access", params={"include_revoked": "true"})
    assert [(g["username"], g["active"]) for g in history.json()["grants"]] == [("ml1", False)]


# Release filters --------------------------------------------------------------------------------------------

def test_referenced_series_and_released_since_filters_answer_from_the_database(served: Served) -> None:
    world = served.world
    train, validation = world.items["train"], world.items["validation"]
    client = served.client("ml1")
    # "Which SEGs were drawn on this series?"
    on_train = client.search_for_series(search_filters={"Modality": "SEG", "ReferencedSeries": train.source_series})
    assert _uids(on_train, "0020000E") == {train.final_series}
    on_both = served.get("ml1", "/dicomweb/series",
                         ReferencedSeries=f"{train.source_series},{validation.source_series}").json()
    assert _uids(on_both, "0020000E") == world.released("train", "validation")
    # The admin sees every read drawn on the validation series, plus their consensus.
    admin = served.get("admin1", "/dicomweb/series", ReferencedSeries=validation.source_series, Modality="SEG")
    assert _uids(admin.json(), "0020000E") == {s for s, _ in validation.hidden} | {validation.final_series}
    assert len(admin.json()) == 3

    # "What was released since my last snapshot?" (ISO 8601 and the DICOM open range).
    since = between("train", "validation")
    studies = client.search_for_studies(search_filters={"ReleasedSince": since.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert _uids(studies, "0020000D") == {validation.study}
    series = served.get("ml1", "/dicomweb/series", released_since=since.strftime("%Y%m%d-")).json()
    assert _uids(series, "0020000E") == {validation.source_series, validation.final_series}
    segs = served.get("ml1", "/dicomweb/series", ReleasedSince=since.strftime("%Y%m%d"), Modality="SEG").json()
    assert _uids(segs, "0020000E") == {validation.final_series}
    instances = served.get("ml1", f"/dicomweb/studies/{validation.study}/instances",
                           ReleasedSince=since.strftime("%Y%m%d")).json()
    assert len(instances) == 12 + 1
    in_series = f"/dicomweb/studies/{validation.study}/series/{validation.source_series}/instances"
    assert len(served.get("ml1", in_series, ReleasedSince=since.strftime("%Y%m%d")).json()) == 12
    assert served.get("ml1", in_series, ReleasedSince="2030-01-01").json() == []
    assert served.get("ml1", f"/dicomweb/studies/{train.study}/series/{train.source_series}/instances",
                      ReleasedSince=since.strftime("%Y%m%d")).json() == []
    everything = served.get("ml1", "/dicomweb/studies", ReleasedSince="2000-01-01").json()
    assert _uids(everything, "0020000D") == {train.study, validation.study}  # never the sealed test split
    assert served.get("ml1", "/dicomweb/studies", ReleasedSince="2030-01-01").json() == []


# Hostile and forged requests ------------------------------------------------------------------------------

def test_hostile_and_forged_requests_get_precise_4xx(served: Served) -> None:
    world = served.world
    train = world.items["train"]
    slug = world.project_slug

    def expect(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert words in response.json()["detail"], response.json()

    forged = httpx.get(f"{served.base}/dicomweb/studies", headers={"Authorization": "Bearer forged-token"})
    assert forged.status_code == 401
    assert httpx.get(f"{served.base}/dicomweb/series").status_code == 401
    expect(served.get("ml1", "/dicomweb/series", ReleasedSince="yesterday"), 400, "ISO 8601")
    expect(served.get("ml1", "/dicomweb/series", ReleasedSince="2026-13-01"), 400, "not a date")
    expect(served.get("ml1", "/dicomweb/series", ReferencedSeries="1.2.abc"), 400, "not a DICOM UID")
    expect(served.get("ml1", "/dicomweb/series", ReferencedSeries=","), 400, "one or more")
    expect(served.get("ml1", "/dicomweb/series", limit="-1"), 400, "non-negative integer")
    expect(served.get("ml1", f"/dicomweb/studies/{train.study}x/series"), 400, "not a DICOM UID")
    expect(served.get("ml1", f"/dicomweb/studies/{train.study}/series/{train.source_series}/instances/"
                      f"{train.datasets[0].SOPInstanceUID}/frames/0", FRAMES), 400, "positive integers")
    expect(served.get("ml1", "/dicomweb/studies", {"Accept": "application/xml"}), 406, "application/dicom+json")

    def grant(user: str, body: dict[str, object], project: str = slug) -> httpx.Response:
        return served.api("POST", user, f"/projects/{project}/test-access", json=body)

    expect(grant("admin1", {"username": "nobody", "reason": "r"}), 404, "no user 'nobody'")
    expect(grant("admin1", {"username": "ml1", "reason": "r"}, "no-such-project"), 404, "no project")
    expect(grant("admin1", {"username": "admin1", "reason": "r"}), 400, "is an admin")
    expect(grant("admin1", {"username": "ml1", "reason": "   "}), 400, "a reason is required")
    assert grant("admin1", {"username": "ml1"}).status_code == 422  # reason missing: schema error
    assert grant("admin1", {"username": "ml1", "reason": "r", "role": "admin"}).status_code == 422  # unknown key
    assert grant("admin1", {"username": "ml1", "reason": "evaluation"}).status_code == 201
    expect(grant("admin1", {"username": "ml1", "reason": "again"}), 409, "already has test access")
    expect(grant("reader1", {"username": "reader1", "reason": "peek"}), 403, "admin")
    expect(served.api("DELETE", "admin1", f"/projects/{slug}/test-access/ml2"), 404, "has no test access")
    expect(served.api("GET", "ml1", f"/projects/{slug}/test-access"), 403, "admin")
    assert len(_audit(served, "test_access_grant")) == 1  # refused attempts leave no grant event


def test_a_project_that_allows_individual_reads_shows_the_finished_reads_but_never_drafts(
        orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> None:
    invalidate_access()
    settings = orthanc.settings.model_copy(update={"database_url": db_url, "var_dir": tmp_path / "var"})
    with ml_world(orthanc.client, db_url, slug="ml-reads", export={"individual_reads": True}) as world, \
            serve(gateway_app(settings)) as base:
        served = Served(world, base)
        validation, train = world.items["validation"], world.items["train"]
        client = served.client("ml1")
        segs = _uids(client.search_for_series(search_filters={"Modality": "SEG"}), "0020000E")
        reads = {series for series, _ in validation.hidden}
        assert segs == world.released("train", "validation") | reads and len(reads) == 2
        for series, sop in validation.hidden:  # each reader's read, rebuilt as the reader drew it
            [seg] = client.retrieve_series(validation.study, series)
            assert seg.SOPInstanceUID == sop
            # reader1 drew mask(1), reader2 mask(3) (world.py): voxel by voxel as drawn.
            drawn = mask(1) if (series, sop) == validation.hidden[0] else mask(3)
            np.testing.assert_array_equal(_rebuild(client, seg), drawn)
        # The train item's draft stays hidden even here; the unreleased item's read too.
        [(_, draft_sop)] = train.hidden
        assert served.get("ml1", f"/dicomweb/studies/{train.study}/series/{train.final_series}/instances/"
                          f"{draft_sop}", DICOM).status_code == 404
        [(pending_series, _)] = world.items["unreleased"].hidden
        assert pending_series not in segs
