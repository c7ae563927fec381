"""Dataset snapshots on a real Orthanc and database: canonical manifests that rebuild byte for byte, DICOM
downloads that hold exactly the manifest's objects, the diff between snapshots, the data-flow log, the sealed
test split, and precise 4xx answers to hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.audit.models import AuditEvent
from pacslabel.db import session_scope
from pacslabel.export import grants
from pacslabel.export.manifest import (
    ObjectChanged,
    ObjectMissing,
    canonical_json,
    fetch_verified,
    manifest_objects,
    parse_manifest,
)
from pacslabel.export.models import DataFlowEvent, Snapshot, SourceObjectHash
from pacslabel.export.snapshots import rebuild_manifest
from pacslabel.review import workflow
from pacslabel.review.models import ConsensusResult, FinalSource
from pacslabel.users.models import User
from tests.export.snapshot_world import ServedWorld, add_read, add_released_item, create_project, served_world
from tests.fixtures.orthanc import RunningOrthanc

Env = ServedWorld  # the client and the world of one test


@pytest.fixture
def env(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[Env]:
    with served_world(orthanc, db_url, tmp_path / "var") as served:
        yield served


def _create(env: Env, user: str, *, include_test: bool = False, project: str | int | None = None) -> dict:
    response = env.client.post(f"/api/projects/{project or env.world.project_id}/snapshots",
                               headers=env.world.headers(user), json={"include_test": include_test})
    assert response.status_code == 201, response.text
    return response.json()


def _grant(env: Env, username: str) -> None:
    with session_scope(env.world.sessions) as session:
        admin = session.scalar(select(User).where(User.username == "admin1"))
        grants.grant_test_access(session, admin, env.world.project_id, username, "release decision 2026-11")


def test_manifest_is_canonical_complete_and_rebuilds_byte_identical(env: Env) -> None:
    world = env.world
    created = _create(env, "admin1", include_test=True)
    assert created["name"] == f"{world.project_slug}@1" and created["parent_id"] is None
    first = env.client.get(f"/api/snapshots/{created['id']}", headers=world.headers("admin1"))
    again = env.client.get(f"/api/snapshots/{created['name']}", headers=world.headers("admin1"))
    assert first.status_code == 200 and first.content == again.content
    assert hashlib.sha256(first.content).hexdigest() == created["manifest_sha256"] == first.headers["x-manifest-sha256"]
    manifest = parse_manifest(first.content)
    assert canonical_json(manifest) == first.content  # sorted keys, fixed separators: one serialisation

    # Every released item, with its split, pseudonym and counts.
    assert [i["item_id"] for i in manifest["items"]] == sorted(i.item_id for i in world.items)
    assert manifest["counts"]["by_split"] == {"train": 2, "validation": 1, "test": 1}
    assert manifest["counts"]["items"] == 4 == created["item_count"]
    # Cyst is drawn in the items whose map holds a 2, the liver and the lesion everywhere.
    assert manifest["counts"]["by_label"] == {"Cyst": sum(int((i.labels == 2).any()) for i in world.items),
                                              "Liver": 4, "Liver lesion": 4}
    assert [label["number"] for label in manifest["protocol"]["labels"]] == [1, 2, 3]
    assert manifest["deidentification"]["method_codes"][0] == "113100"

    # Checksums of the source instances are those of the bytes Orthanc holds.
    for entry in manifest["items"]:
        item = world.item(entry["item_id"])
        assert (entry["split"], entry["patient_pseudonym"]) == (item.split, item.pseudonym)
        [series] = entry["source_series"]
        expected = {str(ds.SOPInstanceUID): hashlib.sha256(
            world.orthanc.get_instance_file(world.orthanc.find_instance(str(ds.SOPInstanceUID)) or "")).hexdigest()
            for ds in item.datasets}
        assert {i["sop_instance_uid"]: i["sha256"] for i in series["instances"]} == expected
        assert len(expected) == len(item.datasets)
        [label] = entry["labels"]
        assert label["sop_instance_uid"] == item.label_sop
        assert label["source_series_instance_uid"] == item.series_uid
        stored = world.orthanc.get_instance_file(world.orthanc.find_instance(label["sop_instance_uid"]) or "")
        assert label["sha256"] == hashlib.sha256(stored).hexdigest()
        assert label["provenance"]["source"] == item.source

    # Provenance: a consensus names its inputs (two reader versions), a single read its version.
    consensus_entry = next(e for e in manifest["items"] if e["labels"][0]["provenance"]["source"] == "consensus")
    with session_scope(world.sessions) as session:
        result = session.scalar(select(ConsensusResult).where(ConsensusResult.item_id == consensus_entry["item_id"]))
        assert result is not None
        provenance = consensus_entry["labels"][0]["provenance"]["consensus"]
        assert provenance["id"] == result.id
        assert [v["id"] for v in provenance["inputs"]] == sorted(result.inputs)
        assert [v["author_role"] for v in provenance["inputs"]] == ["annotator", "annotator"]
        snapshot = session.scalar(select(Snapshot).where(Snapshot.id == created["id"]))
        assert snapshot is not None
        assert rebuild_manifest(session, world.orthanc, snapshot) == first.content
        # Every source instance was hashed once from Orthanc's bytes and is cached by its SOP Instance UID.
        cached = dict(session.execute(select(SourceObjectHash.sop_instance_uid, SourceObjectHash.sha256)).all())
        assert cached == {i["sop_instance_uid"]: i["sha256"] for e in manifest["items"]
                          for s in e["source_series"] for i in s["instances"]}

    # A newly released item does not change the old snapshot (its rebuild still matches), the next snapshot
    # has it, names its parent, and the diff says exactly that.
    added = add_released_item(world, "train", "late", seed=11)
    with session_scope(world.sessions) as session:
        snapshot = session.get(Snapshot, created["id"])
        assert snapshot is not None
        assert rebuild_manifest(session, world.orthanc, snapshot) == first.content
    second = _create(env, "admin1", include_test=True)
    assert (second["name"], second["parent_id"], second["item_count"]) == (f"{world.project_slug}@2",
                                                                           created["id"], 5)
    diff = env.client.get(f"/api/snapshots/{created['id']}/diff/{second['name']}", headers=world.headers("admin1"))
    assert diff.status_code == 200, diff.text
    body = diff.json()
    assert [a["item_id"] for a in body["added"]] == [added.item_id]
    assert body["added"][0]["labels"] == [added.label_sop]
    assert body["counts"] == {"added": 1, "removed": 0, "changed": 0, "unchanged": 4}


def test_dicom_zip_holds_exactly_the_manifest_objects_in_a_patient_study_series_tree(env: Env) -> None:
    world = env.world
    created = _create(env, "admin1", include_test=True)
    manifest = parse_manifest(env.client.get(f"/api/snapshots/{created['id']}",
                                             headers=world.headers("admin1")).content)
    response = env.client.get(f"/api/snapshots/{created['id']}/download", params={"format": "dicom-zip"},
                              headers=world.headers("admin1"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    objects = manifest_objects(manifest)
    expected_paths = {f"{o.patient_pseudonym}/{o.study_instance_uid}/{o.series_instance_uid}/{o.sop_instance_uid}.dcm"
                      for o in objects}
    assert set(archive.namelist()) == expected_paths | {"manifest.json"}
    assert len(archive.namelist()) == len(objects) + 1 == manifest["counts"]["objects"] + 1
    assert archive.read("manifest.json") == canonical_json(manifest)
    for obj in objects:
        data = archive.read(f"{obj.patient_pseudonym}/{obj.study_instance_uid}/{obj.series_instance_uid}/"
                            f"{obj.sop_instance_uid}.dcm")
        assert hashlib.sha256(data).hexdigest() == obj.sha256
        assert str(dcmread(io.BytesIO(data)).SOPInstanceUID) == obj.sop_instance_uid
    # The source instances are the bytes that were stored, unchanged.
    item = world.items[0]
    ds = item.datasets[0]
    tree = f"{item.pseudonym}/{item.study_uid}/{item.series_uid}/{ds.SOPInstanceUID}.dcm"
    assert hashlib.sha256(archive.read(tree)).hexdigest() == hashlib.sha256(
        world.orthanc.get_instance_file(world.orthanc.find_instance(str(ds.SOPInstanceUID)) or "")).hexdigest()
    assert archive.read(tree) == world.orthanc.get_instance_file(world.orthanc.find_instance(str(ds.SOPInstanceUID))
                                                                 or "")
    # The same snapshot gives the same zip bytes.
    repeat = env.client.get(f"/api/snapshots/{created['id']}/download?format=dicom-zip",
                            headers=world.headers("admin1"))
    assert repeat.content == response.content

    # Both downloads are in the log with their byte count.
    with session_scope(world.sessions) as session:
        events = session.scalars(select(DataFlowEvent).where(DataFlowEvent.format == "dicom-zip")
                                 .order_by(DataFlowEvent.id)).all()
        assert [(e.action, e.username, e.byte_count) for e in events] == [
            ("downloaded", "admin1", len(response.content))] * 2


def test_the_test_split_stays_sealed_for_an_ml_user_until_granted(env: Env) -> None:
    world = env.world
    test_items = {i.item_id for i in world.items if i.split == "test"}
    assert test_items
    # An ML user's snapshot leaves the test split out; asking for it is refused.
    own = _create(env, "ml1")
    manifest = parse_manifest(env.client.get(f"/api/snapshots/{own['id']}", headers=world.headers("ml1")).content)
    assert {e["item_id"] for e in manifest["items"]} == {i.item_id for i in world.items} - test_items
    assert manifest["counts"]["by_split"]["test"] == 0 and manifest["snapshot"]["include_test"] is False
    refused = env.client.post(f"/api/projects/{world.project_id}/snapshots", headers=world.headers("ml1"),
                              json={"include_test": True})
    assert refused.status_code == 403 and "test-split access" in refused.json()["detail"]

    # The admin's snapshot with the test split is invisible to ml1 at every door.
    sealed = _create(env, "admin1", include_test=True)
    for path in (f"/api/snapshots/{sealed['id']}", f"/api/snapshots/{sealed['name']}",
                 f"/api/snapshots/{sealed['id']}/download?format=dicom-zip",
                 f"/api/snapshots/{sealed['id']}/download?format=nifti-zip",
                 f"/api/snapshots/{own['id']}/diff/{sealed['id']}"):
        answer = env.client.get(path, headers=world.headers("ml1"))
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["detail"].startswith("no snapshot")
    listed = env.client.get(f"/api/projects/{world.project_slug}/snapshots", headers=world.headers("ml1"))
    assert [s["name"] for s in listed.json()["snapshots"]] == [own["name"]]
    all_listed = env.client.get(f"/api/projects/{world.project_id}/snapshots", headers=world.headers("admin1"))
    assert [s["name"] for s in all_listed.json()["snapshots"]] == [own["name"], sealed["name"]]

    # After an admin's grant ml1 sees it (and may include the test split); ml2 still does not.
    _grant(env, "ml1")
    assert env.client.get(f"/api/snapshots/{sealed['id']}", headers=world.headers("ml1")).status_code == 200
    assert env.client.get(f"/api/snapshots/{sealed['id']}", headers=world.headers("ml2")).status_code == 404
    granted = _create(env, "ml1", include_test=True)
    body = env.client.get(f"/api/snapshots/{granted['id']}", headers=world.headers("ml1")).content
    assert test_items <= {e["item_id"] for e in parse_manifest(body)["items"]}


def test_data_flow_log_shows_every_creation_and_download_to_admins_only(env: Env) -> None:
    world = env.world
    created = _create(env, "ml1")
    manifest = env.client.get(f"/api/snapshots/{created['id']}", headers=world.headers("ml1"))
    zipped = env.client.get(f"/api/snapshots/{created['id']}/download?format=nifti-zip", headers=world.headers("ml1"))
    assert zipped.status_code == 200
    log = env.client.get("/api/exports/log", headers=world.headers("admin1"))
    assert log.status_code == 200, log.text
    events = log.json()["events"]
    assert [(e["username"], e["action"], e["snapshot"], e["format"], e["byte_count"]) for e in events] == [
        ("ml1", "downloaded", created["name"], "nifti-zip", len(zipped.content)),
        ("ml1", "downloaded", created["name"], "manifest", len(manifest.content)),
        ("ml1", "created", created["name"], "manifest", len(manifest.content)),
    ]
    assert all(e["client"].startswith("api ") for e in events)
    by_project = env.client.get(f"/api/exports/log?project={world.project_slug}&limit=1",
                                headers=world.headers("admin1"))
    assert [e["format"] for e in by_project.json()["events"]] == ["nifti-zip"]
    for user in ("ml1", "rev1"):
        assert env.client.get("/api/exports/log", headers=world.headers(user)).status_code == 403
    with session_scope(world.sessions) as session:
        audited = session.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "snapshot")
                                  .order_by(AuditEvent.id)).all()
        assert audited == ["snapshot_created", "snapshot_downloaded", "snapshot_downloaded"]


def test_hostile_input_gets_a_precise_4xx(env: Env) -> None:
    world = env.world
    created = _create(env, "admin1")
    admin = world.headers("admin1")
    cases = [
        ("get", "/api/snapshots/999999", 404, "no snapshot 999999"),
        ("get", f"/api/snapshots/{world.project_slug}@77", 404, "no snapshot"),
        ("get", "/api/snapshots/latest%20one", 400, "not a snapshot id or name"),
        ("get", f"/api/snapshots/{created['id']}/download?format=tar", 400, "unknown download format 'tar'"),
        ("get", f"/api/snapshots/{created['id']}/download?format=dicom-tree", 400, "dicom-zip, nifti-zip"),
        ("get", "/api/snapshots/999999/download?format=dicom-zip", 404, "no snapshot"),
        ("get", f"/api/snapshots/{created['id']}/diff/424242", 404, "no snapshot 424242"),
        ("post", "/api/projects/no-such-project/snapshots", 404, "no project"),
        ("get", "/api/projects/31337/snapshots", 404, "no project"),
        ("get", "/api/exports/log?limit=0", 400, "limit must be between"),
    ]
    for method, path, status, message in cases:
        answer = getattr(env.client, method)(path, headers=admin)
        assert answer.status_code == status, (path, answer.text)
        assert message in answer.json()["detail"], (path, answer.text)
    extra = env.client.post(f"/api/projects/{world.project_id}/snapshots", headers=admin, json={"include_tests": 1})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "body.include_tests"
    # Roles: readers and reviewers have no snapshots; no token at all is 401.
    for user in ("reader1", "rev1"):
        answer = env.client.post(f"/api/projects/{world.project_id}/snapshots", headers=world.headers(user))
        assert answer.status_code == 403, answer.text
        assert env.client.get(f"/api/snapshots/{created['id']}", headers=world.headers(user)).status_code == 403
    assert env.client.get(f"/api/snapshots/{created['id']}").status_code == 401
    # Snapshots of two projects cannot be compared.
    other_id, _ = create_project(world.sessions, "other-project")
    other = _create(env, "admin1", project=other_id)
    mixed = env.client.get(f"/api/snapshots/{created['id']}/diff/{other['id']}", headers=admin)
    assert mixed.status_code == 400 and "different projects" in mixed.json()["detail"]
    # Nothing of this was logged as a delivery.
    with session_scope(world.sessions) as session:
        events = session.scalars(select(DataFlowEvent.action)).all()
        assert events == ["created", "created"]
    assert json.loads(env.client.get(f"/api/snapshots/{other['id']}", headers=admin).content)["items"] == []


def test_diff_reports_a_replaced_final_label_as_changed_and_the_old_snapshot_keeps_its_bytes(env: Env) -> None:
    world = env.world
    first = _create(env, "admin1", include_test=True)
    stored = env.client.get(f"/api/snapshots/{first['id']}", headers=world.headers("admin1")).content
    # An arbiter's version replaces the single read of item 0 as its final label.
    item = world.items[0]
    arbiter_version = add_read(world.sessions, world.orthanc, item.item_id, world.project_id, "reader2", 5,
                            item.labels, {"1": "Liver lesion", "2": "Cyst", "3": "Liver"})
    with session_scope(world.sessions) as session:
        rev1 = session.scalar(select(User).where(User.username == "rev1"))
        assert rev1 is not None
        workflow.set_final_label(session, item.item_id, FinalSource.ARBITRATION, rev1,
                                 annotation_version_id=arbiter_version)
        new_sop = session.get(AnnotationVersion, arbiter_version).sop_instance_uid  # type: ignore[union-attr]
    second = _create(env, "admin1", include_test=True)
    body = env.client.get(f"/api/snapshots/{first['name']}/diff/{second['name']}",
                          headers=world.headers("admin1")).json()
    assert body["counts"] == {"added": 0, "removed": 0, "changed": 1, "unchanged": 3}
    [change] = body["changed"]
    assert change["item_id"] == item.item_id
    assert (change["before"]["labels"], change["after"]["labels"]) == ([item.label_sop], [new_sop])
    # The stored snapshot still serves its frozen bytes; a rebuild from today's data now differs (and says so).
    assert env.client.get(f"/api/snapshots/{first['id']}", headers=world.headers("admin1")).content == stored
    with session_scope(world.sessions) as session:
        snapshot = session.get(Snapshot, first["id"])
        assert snapshot is not None
        assert rebuild_manifest(session, world.orthanc, snapshot) != stored
    manifest = parse_manifest(env.client.get(f"/api/snapshots/{second['id']}", headers=world.headers("admin1")).content)
    [entry] = [e for e in manifest["items"] if e["item_id"] == item.item_id]
    provenance = entry["labels"][0]["provenance"]
    assert provenance["source"] == "arbitration"
    assert provenance["annotation_version"]["id"] == arbiter_version


def test_objects_are_checked_against_the_frozen_checksums(env: Env) -> None:
    world = env.world
    sop = str(world.items[0].datasets[0].SOPInstanceUID)
    data = fetch_verified(world.orthanc, sop, hashlib.sha256(
        world.orthanc.get_instance_file(world.orthanc.find_instance(sop) or "")).hexdigest())
    assert str(dcmread(io.BytesIO(data)).SOPInstanceUID) == sop
    with pytest.raises(ObjectChanged, match=f"instance {sop} in Orthanc no longer matches") as changed:
        fetch_verified(world.orthanc, sop, "0" * 64)
    assert changed.value.status_code == 409
    with pytest.raises(ObjectMissing, match="instance 1.2.3.999 of the released data is not in Orthanc") as missing:
        fetch_verified(world.orthanc, "1.2.3.999", "0" * 64)
    assert missing.value.status_code == 502


def test_a_download_whose_objects_no_longer_match_is_refused_before_the_first_byte(env: Env) -> None:
    world = env.world
    created = _create(env, "admin1")
    with session_scope(world.sessions) as session:  # a row edited behind pacslabel's back
        snapshot = session.get(Snapshot, created["id"])
        assert snapshot is not None
        document = parse_manifest(snapshot.manifest)
        first = document["items"][0]["source_series"][0]["instances"][0]
        first["sha256"] = "0" * 64
        snapshot.manifest = canonical_json(document)
    for export_format in ("dicom-zip", "nifti-zip"):
        answer = env.client.get(f"/api/snapshots/{created['id']}/download?format={export_format}",
                                headers=world.headers("admin1"))
        assert answer.status_code == 409, answer.text
        assert answer.json()["detail"] == (f"instance {first['sop_instance_uid']} in Orthanc no longer matches the "
                                           "snapshot's SHA-256")
    with session_scope(world.sessions) as session:
        assert session.scalars(select(DataFlowEvent.action)).all() == ["created"]
