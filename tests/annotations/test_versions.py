"""Invariant 3 end to end: every save is a new version in the task's own series (author, time, predecessor),
earlier versions stay byte-for-byte, concurrent saves get distinct numbers, the API paths round-trip."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np

from pacslabel.annotations import repository
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import task_series_uid
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import save_annotation
from pacslabel.annotations.sr_building import read_measurement_report
from pacslabel.annotations.versioning import read_author, read_predecessor
from pacslabel.audit.service import list_events
from pacslabel.catalog.models import CatalogStudy
from pacslabel.db import session_scope
from pacslabel.tasks.models import Task
from pacslabel.users.models import User
from tests.annotations.conftest import dciodvfy_errors, sparse_labels
from tests.annotations.test_versions_env import (  # noqa: F401  (env is a fixture)
    add_task,
    env,
    make_seg,
    ohif_like,
    referenced,
    stored_dataset,
    stored_file,
    stow,
)


def test_stow_of_a_seg_becomes_version_1_then_version_2_and_version_1_never_changes(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    study = env.studies["A"]
    sent = make_seg(study)
    first = stow(env, "reader1", sent)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("application/dicom+json")
    [item] = referenced(first)
    v1_uid = item["00081155"]["Value"][0]
    assert v1_uid != sent.SOPInstanceUID  # a new instance, never the client's UID
    assert item["00081150"]["Value"][0] == sent.SOPClassUID
    assert item["00081190"]["Value"][0].endswith(
        f"/dicomweb/studies/{study.study_uid}/series/{task_series_uid(study.study_uid, study.task_id, 'SEG')}"
        f"/instances/{v1_uid}")
    assert first.json()["00081198"]["Value"] == []
    v1_bytes = stored_file(env, v1_uid)
    v1 = stored_dataset(env, v1_uid)
    assert v1.ContentCreatorName == "reader1" and read_author(v1) == "reader1"
    assert v1.SeriesInstanceUID == task_series_uid(study.study_uid, study.task_id, "SEG")
    assert v1.InstanceNumber == 1 and read_predecessor(v1) is None
    assert dciodvfy_errors(v1, tmp_path) == []

    second = stow(env, "reader1", ohif_like(make_seg(study)))
    assert second.status_code == 200, second.text
    v2_uid = referenced(second)[0]["00081155"]["Value"][0]
    v2 = stored_dataset(env, v2_uid)
    assert v2.InstanceNumber == 2 and read_predecessor(v2) == v1_uid
    assert v2.SeriesInstanceUID == v1.SeriesInstanceUID
    assert stored_file(env, v1_uid) == v1_bytes  # never overwritten
    # OHIF's gaps were repaired: pixel measures filled, placeholder codes mapped to the protocol.
    assert v2.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices == 5.0
    assert v2.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    np.testing.assert_array_equal(read_label_array(v2, study.source), sparse_labels(study.source.shape))

    listed = env.client.get(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"])
    assert listed.status_code == 200
    versions = listed.json()["versions"]
    assert [(v["modality"], v["version"]) for v in versions] == [("SEG", 1), ("SEG", 2)]
    assert versions[1]["predecessor_sop_instance_uid"] == v1_uid
    assert versions[0]["repairs"] == [] and any("PixelMeasuresSequence" in r for r in versions[1]["repairs"])
    assert env.client.get(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader2"]).status_code == 404
    assert env.client.get("/api/tasks/999999/annotations", headers=env.headers["reader1"]).status_code == 404
    with session_scope(env.sessions) as session:
        rows = repository.versions_of_task(session, study.task_id)
        assert [row.orthanc_id is not None for row in rows] == [True, True]
        assert rows[1].predecessor_id == rows[0].id and rows[0].author_role == "annotator"
        events = list_events(session, action="annotation_save")
        assert [(e.detail or {}).get("version") for e in events] == [2, 1]


def test_concurrent_saves_get_distinct_version_numbers(env) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    study = env.studies["A"]
    datasets = [make_seg(study) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(datasets))

    def save(ds) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait(timeout=60)  # start together, before any database access
            with session_scope(env.sessions) as session:
                user = session.query(User).filter_by(username="reader1").one()
                save_annotation(session, env.orthanc, user, ds, origin="ohif")
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=save, args=(ds,)) for ds in datasets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with session_scope(env.sessions) as session:
        rows = repository.versions_of_task(session, study.task_id, "SEG")
        assert [row.version for row in rows] == [1, 2, 3, 4]
        by_id = {row.id: row for row in rows}
        assert [by_id[row.predecessor_id].version if row.predecessor_id else None for row in rows] == [None, 1, 2, 3]
        for row in rows:
            assert stored_dataset(env, row.sop_instance_uid).InstanceNumber == row.version


def test_api_label_array_round_trips_exactly_through_orthanc(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    study = env.studies["A"]
    labels = sparse_labels(study.source.shape)
    for number, seg_type in enumerate(("BINARY", "LABELMAP"), start=1):
        buffer = io.BytesIO()
        np.save(buffer, labels)
        response = env.client.post(
            f"/api/tasks/{study.task_id}/annotations",
            files={"labels": ("labels.npy", buffer.getvalue(), "application/octet-stream")},
            data={"segments": '{"1": "Liver lesion", "2": "Cyst", "3": "liver"}', "seg_type": seg_type},
            headers=env.headers["reader1"],
        )
        assert response.status_code == 201, response.text
        version = response.json()["version"]
        assert version["version"] == number and version["origin"] == "api"
        stored = stored_dataset(env, version["sop_instance_uid"])
        assert stored.ContentCreatorName == "reader1" and stored.SegmentationType == seg_type
        np.testing.assert_array_equal(read_label_array(stored, study.source), labels)
        assert dciodvfy_errors(stored, tmp_path) == []
    # Another reader cannot save on this task; bad uploads get a message.
    other = env.client.post(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader2"],
                            files={"labels": ("l.npy", b"x", "application/octet-stream")}, data={"segments": "{}"})
    assert other.status_code == 403
    bad = env.client.post(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"],
                          files={"labels": ("l.npy", b"not numpy", "application/octet-stream")},
                          data={"segments": '{"1": "Liver lesion"}'})
    assert bad.status_code == 422 and ".npy" in bad.json()["detail"]
    wrong_shape = io.BytesIO()
    np.save(wrong_shape, np.zeros((2, 3, 4), dtype=np.uint8))
    bad = env.client.post(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"],
                          files={"labels": ("l.npy", wrong_shape.getvalue(), "application/octet-stream")},
                          data={"segments": '{"1": "Liver lesion"}'})
    assert bad.status_code == 422 and "shape" in bad.json()["detail"]


def test_api_measurement_report_is_stored_as_sr_version_and_reads_back(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    study = env.studies["A"]
    source: SourceSeries = study.source
    body = {
        "measurements": [{"value_mm": 12.5, "sop_instance_uid": source.sop_instance_uids[4],
                          "points": [[10, 10], [20, 18]], "tracking_id": "lesion 1", "finding": "Liver lesion"}],
        "answers": {"lesion_present": "yes"},
    }
    for number in (1, 2):
        response = env.client.post(f"/api/tasks/{study.task_id}/annotations", json=body,
                                   headers=env.headers["reader1"])
        assert response.status_code == 201, response.text
        version = response.json()["version"]
        assert version["modality"] == "SR" and version["version"] == number
    sr = stored_dataset(env, version["sop_instance_uid"])
    assert sr.SeriesInstanceUID == task_series_uid(study.study_uid, study.task_id, "SR")
    assert read_author(sr) == "reader1" and read_predecessor(sr) is not None
    content = read_measurement_report(sr)
    assert [round(m.value_mm, 3) for m in content.lengths] == [12.5]
    assert content.lengths[0].sop_instance_uid == source.sop_instance_uids[4]
    [answer] = content.answers.values()
    assert answer.meaning == "yes"
    assert dciodvfy_errors(sr, tmp_path) == []
    # The stored SR can be sent again through STOW (OHIF "Create SR" path): it becomes version 3.
    response = stow(env, "reader1", sr)
    assert response.status_code == 200, response.text
    bad = env.client.post(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"],
                          json={"answers": {"lesion_present": "maybe"}})
    assert bad.status_code == 422 and "'maybe'" in bad.json()["detail"]
    assert env.client.post(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"],
                           content=b"x", ).status_code == 415


def test_reviewer_saves_on_a_review_task_with_the_reviewer_role(env) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    study = env.studies["B"]
    with session_scope(env.sessions) as session:
        task = session.get(Task, study.task_id)
        assert task is not None
        reviewer = session.query(User).filter_by(username="reader1").one()
        catalog_study = session.query(CatalogStudy).filter_by(study_instance_uid=study.study_uid).one()
        review = add_task(session, task.project_id, task.protocol_version, catalog_study, study.series_uid,
                          reviewer.id, purpose="review", status="in_progress")
        review_id = review.id
    response = stow(env, "reader1", make_seg(study))
    assert response.status_code == 200, response.text
    with session_scope(env.sessions) as session:
        [row] = repository.versions_of_task(session, review_id)
        assert row.author_role == "reviewer" and row.version == 1
        assert repository.versions_of_task(session, study.task_id) == []  # reader2's task untouched
