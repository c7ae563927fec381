"""Review workflow end to end on a real Orthanc and database, through the real gateway: three readers save
SEGs of known masks; the reviewer fixes two reads directly (one through the JSON API, one through STOW) and
the readers see what changed; reader and reviewer talk in the task's comment thread; the reviewer rejects one
read with a reason, the reader fixes and resubmits, all are approved -> a consensus whose Dice numbers (pairs,
each reader against the consensus) match an independent numpy computation, and whose SEG is in Orthanc,
references its inputs and passes dciodvfy; a disagreement below the threshold gives exactly one arbitration
task however often the item is finished, and the arbiter's SEG becomes the final label with its provenance."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations import repository as annotation_repository
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationVersion, task_series_uid
from pacslabel.annotations.seg_building import build_segmentation, segment_specs_from_mapping
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import protocol_labels
from pacslabel.audit.models import AuditEvent
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.dicomweb.multipart import encode_multipart_related
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review import repository, workflow
from pacslabel.review.models import ConsensusResult, FinalLabel, ReviewDecision
from pacslabel.review.routes import router as review_router
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from tests.annotations.conftest import dciodvfy_errors
from tests.annotations.test_versions_env import build_app, part10, protocol
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.worlds import (
    add_study_item,
    add_users,
    bearer,
    npy,
    open_task,
    save_labels,
    store_ct_study,
    user_named,
    world_database,
    world_settings,
)
from tests.projects.helpers import apply_dict, project_dict

SHAPE = (12, 64, 64)
SEGMENTS = {"1": "Liver lesion", "2": "Cyst", "3": "Liver"}
READERS = ("reader1", "reader2", "reader3")
THRESHOLD = 0.8


def masks() -> dict[str, np.ndarray]:
    """Known masks (protocol numbering: 1 lesion, 3 liver). reader3's lesion is elsewhere: its lesion Dice with
    the others is 0, below the threshold."""
    r1 = np.zeros(SHAPE, np.uint8)
    r1[2:9, 20:50, 20:50] = 3
    r1[4:7, 25:32, 25:32] = 1
    r2 = np.zeros(SHAPE, np.uint8)
    r2[2:9, 22:52, 20:50] = 3
    r2[4:7, 26:33, 25:32] = 1
    r3 = np.zeros(SHAPE, np.uint8)
    r3[3:10, 20:50, 21:51] = 3
    r3[4:7, 40:46, 40:46] = 1
    return {"reader1": r1, "reader2": r2, "reader3": r3}


def first_draft() -> np.ndarray:
    """reader3's rejected first version: the liver only, no lesion."""
    draft = np.zeros(SHAPE, np.uint8)
    draft[2:9, 20:50, 20:50] = 3
    return draft


def drafts_fixed_by_the_reviewer(known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """reader1 drew the liver one slice too far (slice 9); reader2 drew the lesion on slice 6 as liver and
    missed the liver on slice 2. The reviewer's fixes are the known masks."""
    r1 = known["reader1"].copy()
    r1[9, 20:50, 20:50] = 3
    r2 = known["reader2"].copy()
    r2[6, 26:33, 25:32] = 3
    r2[2] = 0
    return {"reader1": r1, "reader2": r2}


def project_settings(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "slug": "liver-review", "name": "Liver review",
        "selection": {"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]}, "protocol": protocol(),
        "readers_per_split": {"train": 1, "validation": 3, "test": 3},
        "review": {"fractions": {"train": 0.0, "validation": 1.0, "test": 1.0}, "agreement_threshold": THRESHOLD}}
    settings.update(overrides)
    return settings


@dataclass
class ReviewEnv:
    client: TestClient
    orthanc: OrthancClient
    sessions: sessionmaker[Session]
    headers: dict[str, dict[str, str]]
    tasks: dict[str, int]
    item_id: int
    study_uid: str
    source: SourceSeries


@pytest.fixture
def review_env(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[ReviewEnv]:
    tasks: dict[str, int] = {}
    with world_database(db_url) as sessions:
        with session_scope(sessions) as session:
            users, tokens = add_users(session, [("admin1", "admin"), ("rev1", "reviewer"),
                                                *((r, "annotator") for r in READERS)])
            project = apply_dict(session, project_dict(**project_settings()))
            datasets, study = store_ct_study(session, orthanc.client, "R")
            item = add_study_item(session, project.id, study, [str(datasets[0].SeriesInstanceUID)],
                                  split="validation", needs_review=True, released_at=utcnow())
            for slot, name in enumerate(READERS):
                tasks[name] = open_task(session, project.id, item.id, users[name].id, slot=slot,
                                        protocol_version=project.protocol_version, claimed_at=utcnow()).id
            item_id, study_uid = item.id, study.study_instance_uid
        app = build_app(world_settings(orthanc, db_url, tmp_path / "var"))
        app.include_router(review_router)  # until the lead mounts it in create_app
        with TestClient(app) as client:
            yield ReviewEnv(client, orthanc.client, sessions, {name: bearer(t) for name, t in tokens.items()},
                            tasks, item_id, study_uid, SourceSeries.from_instances(datasets))


def save_and_submit(env: ReviewEnv, reader: str, labels: np.ndarray, note: str | None = None) -> int:
    with session_scope(env.sessions) as session:
        version_id = save_labels(session, env.orthanc, reader, env.tasks[reader], labels, SEGMENTS).id
    with session_scope(env.sessions) as session:
        user, task = user_named(session, reader), session.get(Task, env.tasks[reader])
        assert task is not None
        if note:
            task_service.leave_note(session, task, user, note)
        task_service.submit_task(session, task, user)
    return version_id


def approve_all_reads(env: ReviewEnv) -> None:
    """rev1 approves every read through the workflow service, one transaction each (as the routes do)."""
    for reader in READERS:
        with session_scope(env.sessions) as session:
            read_task = session.get(Task, env.tasks[reader])
            assert read_task is not None
            workflow.approve(session, None, user_named(session, "rev1"), read_task, orthanc=env.orthanc)


def numpy_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def expected_changes(before: np.ndarray, after: np.ndarray) -> dict[int, dict[str, object]]:
    """Per label: voxels added / removed, Dice and the slices where the label changed, in plain numpy."""
    result: dict[int, dict[str, object]] = {}
    for label in sorted((set(np.unique(before)) | set(np.unique(after))) - {0}):
        old, new = before == label, after == label
        changed = old ^ new
        result[int(label)] = {"added_voxels": int((new & ~old).sum()), "removed_voxels": int((old & ~new).sum()),
                              "dice": numpy_dice(old, new),
                              "slices_touched": [k for k in range(SHAPE[0]) if changed[k].any()]}
    return result


def changes_by_label(fix: dict[str, object]) -> dict[int, dict[str, object]]:
    labels = fix["labels"]
    assert isinstance(labels, list)
    return {int(entry["label"]): {key: entry[key] for key in ("added_voxels", "removed_voxels", "dice",
                                                                "slices_touched")} for entry in labels}


def stow_fix(env: ReviewEnv, reviewer: str, read_task_id: int, labels: np.ndarray) -> object:
    """The reviewer's fix as OHIF would store it: a SEG written over the read's own SEG series, by STOW."""
    with session_scope(env.sessions) as session:
        task = session.get(Task, read_task_id)
        assert task is not None
        specs = segment_specs_from_mapping(SEGMENTS, protocol_labels(annotation_repository.protocol_of(session, task)))
    seg = build_segmentation(labels, env.source, specs,
                             series_instance_uid=task_series_uid(env.study_uid, read_task_id, "SEG"),
                             series_number=3100, instance_number=1, author=reviewer)
    body, header = encode_multipart_related([part10(seg)])
    return env.client.post(f"/dicomweb/studies/{env.study_uid}", content=body,
                           headers={**env.headers[reviewer], "Content-Type": header})


def seg_of(env: ReviewEnv, sop_instance_uid: str) -> object:
    orthanc_id = env.orthanc.find_instance(sop_instance_uid)
    assert orthanc_id is not None, f"{sop_instance_uid} is not in Orthanc"
    return dcmread(io.BytesIO(env.orthanc.get_instance_file(orthanc_id)))


def test_reject_fix_approve_consensus_and_one_arbitration_task(review_env: ReviewEnv, tmp_path: Path) -> None:
    env = review_env
    known = masks()
    drafts = drafts_fixed_by_the_reviewer(known)
    v1 = save_and_submit(env, "reader1", drafts["reader1"])
    v2 = save_and_submit(env, "reader2", drafts["reader2"], note="is the lesion at slice 5 real?")
    draft = save_and_submit(env, "reader3", first_draft())

    # The reviewer's queue: the three submitted reads, oldest first, with the reader's note.
    assert env.client.get("/api/review/queue", headers=env.headers["reader1"]).status_code == 403
    queued = env.client.get("/api/review/queue", headers=env.headers["rev1"])
    assert queued.status_code == 200, queued.text
    reads = queued.json()["reads"]
    assert [r["task_id"] for r in reads] == [env.tasks[r] for r in READERS]
    assert reads[1]["note"] == "is the lesion at slice 5 real?"
    # All reads are submitted: "Next" gives the reviewer the item's review task.
    with session_scope(env.sessions) as session:
        review_task = task_service.claim_next_task(session, user_named(session, "rev1"))
        assert review_task is not None and review_task.purpose == "review"
        review_task_id = review_task.id

    # Access and input checks.
    r1, r2, r3 = (env.tasks[r] for r in READERS)
    assert env.client.post(f"/api/review/tasks/{r3}/approve", headers=env.headers["reader1"]).status_code == 403
    assert env.client.post("/api/review/tasks/999999/approve", headers=env.headers["rev1"]).status_code == 404
    bad = env.client.post(f"/api/review/tasks/{r3}/reject", headers=env.headers["rev1"],
                          json={"reason": "I do not like it"})
    assert bad.status_code == 400 and "wrong label" in bad.json()["detail"]

    # Reject reader3's draft: the task goes back to the reader.
    rejected = env.client.post(f"/api/review/tasks/{r3}/reject", headers=env.headers["rev1"],
                               json={"reason": "incomplete segmentation", "comment": "the lesion is missing"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["task_status"] == "returned"
    assert rejected.json()["annotation_version_id"] == draft
    assert [r["task_id"] for r in env.client.get("/api/review/queue", headers=env.headers["rev1"]).json()["reads"]
            ] == [env.tasks["reader1"], env.tasks["reader2"]]

    # Reader and reviewer talk on reader3's task; another reader of the item never sees the thread.
    asked = env.client.post(f"/api/tasks/{r3}/comments", headers=env.headers["reader3"],
                            json={"body": "Which lesion do you mean?"})
    assert asked.status_code == 201, asked.text
    answered = env.client.post(f"/api/tasks/{r3}/comments", headers=env.headers["rev1"],
                               json={"body": "The one in segment 4-6, right lobe."})
    assert answered.status_code == 201, answered.text
    assert env.client.get(f"/api/tasks/{r3}/comments", headers=env.headers["reader1"]).status_code == 403
    assert env.client.post(f"/api/tasks/{r3}/comments", headers=env.headers["reader1"],
                           json={"body": "me too"}).status_code == 403
    assert env.client.get("/api/tasks/999999/comments", headers=env.headers["rev1"]).status_code == 404
    blank = env.client.post(f"/api/tasks/{r3}/comments", headers=env.headers["reader3"], json={"body": "   "})
    assert blank.status_code == 400 and "needs some text" in blank.json()["detail"]
    assert env.client.post(f"/api/tasks/{r3}/comments", headers=env.headers["reader3"],
                           json={"body": "x" * 4001}).status_code == 422
    thread = env.client.get(f"/api/tasks/{r3}/comments", headers=env.headers["admin1"])
    assert thread.status_code == 200
    assert [(c["author"], c["body"]) for c in thread.json()["comments"]] == [
        ("reader3", "Which lesion do you mean?"), ("rev1", "The one in segment 4-6, right lobe.")]
    # The same thread through the pages: the reader on their task page, the reviewer from the review page.
    posted = env.client.post(f"/tasks/{r3}/comments", headers=env.headers["reader3"],
                             data={"body": "Found it, fixing."}, follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"] == f"/tasks/{r3}?saved=comment#comments"
    posted = env.client.post(f"/tasks/{r3}/comments", headers=env.headers["rev1"],
                             data={"body": "Thanks.", "back": str(review_task_id)}, follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"].startswith(f"/tasks/{review_task_id}?")
    review_page = env.client.get(f"/tasks/{review_task_id}", headers=env.headers["rev1"])
    assert review_page.status_code == 200 and "Found it, fixing." in review_page.text
    assert env.client.post(f"/tasks/{r3}/comments", headers=env.headers["reader1"],
                           data={"body": "me too"}, follow_redirects=False).status_code == 403
    page = env.client.get(f"/tasks/{r3}", headers=env.headers["reader3"])
    assert page.status_code == 200 and "The one in segment 4-6, right lobe." in page.text and "Thanks." in page.text
    assert "incomplete segmentation" in page.text  # the rejection reason is on the reader's page

    # The reviewer fixes reader2's read directly through the JSON API on their review task ...
    fix_url = f"/api/tasks/{review_task_id}/annotations"
    files = {"labels": ("labels.npy", npy(known["reader2"]), "application/octet-stream")}
    assert env.client.post(fix_url + "?fixes=abc", headers=env.headers["rev1"], files=files,
                           data={"segments": json.dumps(SEGMENTS)}).status_code == 422
    assert env.client.post(fix_url + "?fixes=999999", headers=env.headers["rev1"], files=files,
                           data={"segments": json.dumps(SEGMENTS)}).status_code == 422
    returned = env.client.post(fix_url + f"?fixes={r3}", headers=env.headers["rev1"], files=files,
                               data={"segments": json.dumps(SEGMENTS)})
    assert returned.status_code == 409 and "returned" in returned.json()["detail"]  # not under review now
    ambiguous = env.client.post(fix_url, headers=env.headers["rev1"], files=files,
                                data={"segments": json.dumps(SEGMENTS)})
    assert ambiguous.status_code == 422 and "say which read" in ambiguous.json()["detail"]
    fixed_by_api = env.client.post(fix_url + f"?fixes={r2}", headers=env.headers["rev1"], files=files,
                                   data={"segments": json.dumps(SEGMENTS)})
    assert fixed_by_api.status_code == 201, fixed_by_api.text
    # ... and reader1's through STOW, over the read's own SEG series (as OHIF saves an edited SEG).
    stowed = stow_fix(env, "rev1", r1, known["reader1"])
    assert stowed.status_code == 200, stowed.text  # type: ignore[attr-defined]
    with session_scope(env.sessions) as session:
        rev1_id = user_named(session, "rev1").id
        fix1, fix2 = (annotation_repository.latest_version(session, task_id, "SEG") for task_id in (r1, r2))
        assert fix1 is not None and fix2 is not None
        for fix, task_id, predecessor in ((fix1, r1, v1), (fix2, r2, v2)):
            assert (fix.task_id, fix.version, fix.author_id, fix.author_role, fix.predecessor_id) == (
                task_id, 2, rev1_id, "reviewer", predecessor)
            assert fix.series_instance_uid == task_series_uid(env.study_uid, task_id, "SEG")
        fix1_id, fix2_id = fix1.id, fix2.id
        fix1_sop, fix2_sop = fix1.sop_instance_uid, fix2.sop_instance_uid
        drafts_sop = {v: session.get(AnnotationVersion, v).sop_instance_uid for v in (v1, v2)}  # type: ignore[union-attr]
    fixed_seg = seg_of(env, fix2_sop)
    assert str(fixed_seg.ContentCreatorName) == "rev1"  # type: ignore[attr-defined]
    # The readers' own versions stay retrievable, through the gateway, by their readers.
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    for reader, task_id, version_id in (("reader1", r1, v1), ("reader2", r2, v2)):
        series = task_series_uid(env.study_uid, task_id, "SEG")
        url = f"/dicomweb/studies/{env.study_uid}/series/{series}/instances/{drafts_sop[version_id]}"
        assert env.client.get(url, headers={**env.headers[reader], **accept}).status_code == 200
    # Blinding holds: reader2 does not see reader1's series (with the reviewer's fix in it).
    r1_series = task_series_uid(env.study_uid, r1, "SEG")
    assert env.client.get(f"/dicomweb/studies/{env.study_uid}/series/{r1_series}/instances/{fix1_sop}",
                          headers={**env.headers["reader2"], **accept}).status_code in (403, 404)

    # The readers see what changed, per label, in the JSON API and on their task page.
    for reader, task_id, fix_id in (("reader1", r1, fix1_id), ("reader2", r2, fix2_id)):
        changes = env.client.get(f"/api/tasks/{task_id}/changes", headers=env.headers[reader])
        assert changes.status_code == 200, changes.text
        [fix] = changes.json()["fixes"]
        assert (fix["version_id"], fix["author"], fix["author_role"], fix["predecessor_version"]) == (
            fix_id, "rev1", "reviewer", 1)
        expected = expected_changes(drafts[reader], known[reader])
        got = changes_by_label(fix)
        assert set(got) == set(expected)
        for label, numbers in expected.items():
            assert got[label]["added_voxels"] == numbers["added_voxels"]
            assert got[label]["removed_voxels"] == numbers["removed_voxels"]
            assert got[label]["slices_touched"] == numbers["slices_touched"]
            assert got[label]["dice"] == pytest.approx(numbers["dice"], abs=1e-12)
    assert expected_changes(drafts["reader2"], known["reader2"])[1]["added_voxels"] == 49  # slice 6 lesion
    assert env.client.get(f"/api/tasks/{r2}/changes", headers=env.headers["reader1"]).status_code == 403
    page = env.client.get(f"/tasks/{r2}", headers=env.headers["reader2"])
    assert page.status_code == 200 and "What the reviewer changed" in page.text
    lesion = expected_changes(drafts["reader2"], known["reader2"])[1]
    assert (f'<tr data-label="1"><td>Liver lesion</td><td class="added">{lesion["added_voxels"]}</td>'
            f'<td class="removed">{lesion["removed_voxels"]}</td>') in page.text

    # The reader gets it back on "Next", saves a fixed version and resubmits.
    with session_scope(env.sessions) as session:
        again = task_service.claim_next_task(session, user_named(session, "reader3"))
        assert again is not None and again.id == r3 and again.status == "in_progress"
    fixed = save_and_submit(env, "reader3", known["reader3"])
    assert fixed != draft

    for reader in READERS:
        approved = env.client.post(f"/api/review/tasks/{env.tasks[reader]}/approve", headers=env.headers["rev1"])
        assert approved.status_code == 200, approved.text
        assert approved.json()["task_status"] == "done"
    assert env.client.post(f"/api/review/tasks/{r3}/approve", headers=env.headers["rev1"]).status_code == 409

    arrays = [known[r] for r in READERS]
    stacked = np.stack(arrays)
    vote = np.zeros(SHAPE, np.uint8)
    for label in (1, 3):
        vote[(stacked == label).sum(axis=0) >= 2] = label
    with session_scope(env.sessions) as session:
        decisions = repository.decisions_of_task(session, r3)
        assert [(d.decision, d.reason, d.annotation_version_id) for d in decisions] == [
            ("reject", "incomplete segmentation", draft), ("approve", None, fixed)]
        assert repository.decisions_of_task(session, r2)[-1].annotation_version_id == fix2_id  # approved the fix
        review_task = session.get(Task, review_task_id)
        assert review_task is not None and review_task.status == "done"
        [result] = session.scalars(select(ConsensusResult).where(ConsensusResult.item_id == env.item_id)).all()
        inputs = [fix1_id, fix2_id, fixed]
        assert result.inputs == sorted(inputs)
        assert result.method == "majority"
        # Independent computation on the known masks.
        expected = {str(label): float(np.mean([numpy_dice(a == label, b == label)
                                               for a, b in combinations(arrays, 2)])) for label in (1, 3)}
        assert set(result.mean_dice) == set(expected)
        for label, value in expected.items():
            assert result.mean_dice[label] == pytest.approx(value, abs=1e-9)
        all_pairs = [numpy_dice(a == label, b == label) for label in (1, 3) for a, b in combinations(arrays, 2)]
        assert result.min_dice == pytest.approx(min(all_pairs), abs=1e-9)
        assert result.min_dice == 0.0 < THRESHOLD
        assert len(result.pairs) == 6
        # Each reader's agreement with the consensus, per label.
        assert result.reader_agreement is not None and set(result.reader_agreement) == {str(v) for v in inputs}
        for version_id, array in zip(inputs, arrays, strict=True):
            for label in (1, 3):
                assert result.reader_agreement[str(version_id)][str(label)] == pytest.approx(
                    numpy_dice(array == label, vote == label), abs=1e-12)
        assert result.comparison is not None and result.comparison["method"] == "staple"
        assert set(result.comparison["dice_to_consensus"]) == {"1", "3"}  # type: ignore[arg-type]
        sop_uid = result.sop_instance_uid
        assert sop_uid is not None
        [final] = session.scalars(select(FinalLabel).where(FinalLabel.item_id == env.item_id)).all()
        assert (final.source, final.consensus_id) == ("consensus", result.id)
        arbitration = session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                         Task.purpose == "arbitration")).all()
        assert len(arbitration) == 1 and arbitration[0].reader_id == rev1_id
        arbitration_id, consensus_id = arbitration[0].id, result.id
        input_sops = {session.get(AnnotationVersion, v).sop_instance_uid for v in inputs}  # type: ignore[union-attr]
        comments = session.scalars(select(AuditEvent).where(AuditEvent.action == "task_comment")).all()
        assert [(e.actor, e.object_id) for e in comments] == [("reader3", str(r3)), ("rev1", str(r3))] * 2

    # The consensus SEG is in Orthanc, is the majority vote of the known masks and references its inputs.
    seg = seg_of(env, sop_uid)
    assert seg.SeriesDescription == "consensus"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(read_label_array(seg, env.source), vote)  # type: ignore[arg-type]
    [study_ref] = seg.StudiesContainingOtherReferencedInstancesSequence  # type: ignore[attr-defined]
    assert study_ref.StudyInstanceUID == env.study_uid
    assert {str(i.ReferencedSOPInstanceUID) for s in study_ref.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence} == input_sops
    assert seg.ContentDescription == "majority consensus of 3 reads"  # type: ignore[attr-defined]
    assert dciodvfy_errors(seg, tmp_path) == []  # type: ignore[arg-type]

    # Finishing the item again (a retry, a second approval racing) changes nothing: one consensus, one
    # arbitration task, one final label.
    for _ in range(2):
        with session_scope(env.sessions) as session:
            item = session.get(ProjectItem, env.item_id)
            assert item is not None
            workflow.finish_item(session, env.orthanc, item, user_named(session, "rev1"))
    with session_scope(env.sessions) as session:
        assert len(repository.consensus_results(session, env.item_id)) == 1
        assert len(session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                      Task.purpose == "arbitration")).all()) == 1
        assert len(session.scalars(select(FinalLabel)).all()) == 1
        assert len(session.scalars(select(ReviewDecision)).all()) == 4

    # The arbiter sees all reads side by side, saves the arbitrated SEG and submits: it becomes final.
    with session_scope(env.sessions) as session:
        served = task_service.claim_next_task(session, user_named(session, "rev1"))
        assert served is not None and served.id == arbitration_id and served.status == "in_progress"
    for task_id in (r1, r2, r3):
        series = task_series_uid(env.study_uid, task_id, "SEG")
        seen = env.client.get(f"/dicomweb/studies/{env.study_uid}/series/{series}/metadata",
                              headers={**env.headers["rev1"], "Accept": "application/dicom+json"})
        assert seen.status_code == 200, (task_id, seen.status_code)
    early = env.client.post(f"/api/tasks/{arbitration_id}/submit", headers=env.headers["rev1"])
    assert early.status_code == 409 and "no segmentation" in early.json()["detail"]
    arbitrated = env.client.post(f"/api/tasks/{arbitration_id}/annotations", headers=env.headers["rev1"],
                                 files={"labels": ("labels.npy", npy(known["reader1"]), "application/octet-stream")},
                                 data={"segments": json.dumps(SEGMENTS)})
    assert arbitrated.status_code == 201, arbitrated.text
    arbitration_version = arbitrated.json()["version"]["id"]
    # The arbitrated SEG names the reads it settled (their latest versions, the consensus inputs).
    arbitrated_seg = seg_of(env, arbitrated.json()["version"]["sop_instance_uid"])
    [study_ref] = arbitrated_seg.StudiesContainingOtherReferencedInstancesSequence  # type: ignore[attr-defined]
    assert {str(i.ReferencedSOPInstanceUID) for s in study_ref.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence} == input_sops
    assert arbitrated_seg.ContentDescription == "arbitration of 3 reads"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(read_label_array(arbitrated_seg, env.source), known["reader1"])  # type: ignore[arg-type]
    assert dciodvfy_errors(arbitrated_seg, tmp_path) == []  # type: ignore[arg-type]
    submitted = env.client.post(f"/api/tasks/{arbitration_id}/submit", headers=env.headers["rev1"])
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "done"
    with session_scope(env.sessions) as session:
        final = repository.final_label(session, env.item_id)
        assert final is not None
        assert (final.source, final.annotation_version_id, final.consensus_id) == (
            "arbitration", arbitration_version, consensus_id)
        assert len(session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                      Task.purpose == "arbitration")).all()) == 1

    # The final label with its provenance: every version it came from.
    assert env.client.get(f"/api/items/{env.item_id}/final-label", headers=env.headers["reader1"]).status_code == 403
    assert env.client.get("/api/items/999999/final-label", headers=env.headers["admin1"]).status_code == 404
    provenance = env.client.get(f"/api/items/{env.item_id}/final-label", headers=env.headers["admin1"])
    assert provenance.status_code == 200, provenance.text
    body = provenance.json()
    assert body["source"] == "arbitration" and body["consensus"]["id"] == consensus_id
    roles = {v["id"]: (v["role"], v["author"], v["is_fix"]) for v in body["versions"]}
    assert roles == {
        arbitration_version: ("final", "rev1", False),
        fix1_id: ("consensus_input", "rev1", True), fix2_id: ("consensus_input", "rev1", True),
        fixed: ("consensus_input", "reader3", False),
        v1: ("earlier_version", "reader1", False), v2: ("earlier_version", "reader2", False),
        draft: ("earlier_version", "reader3", False),
    }
    assert [(d["task_id"], d["decision"]) for d in body["decisions"]] == [
        (r3, "reject"), (r1, "approve"), (r2, "approve"), (r3, "approve")]
    assert body["consensus"]["reader_agreement"] == dict(result_agreement(env).items())


def result_agreement(env: ReviewEnv) -> dict[str, dict[str, float]]:
    with session_scope(env.sessions) as session:
        [result] = repository.consensus_results(session, env.item_id)
        assert result.reader_agreement is not None
        return dict(result.reader_agreement)


def test_agreement_above_threshold_gives_a_consensus_final_label_and_no_arbitration(review_env: ReviewEnv) -> None:
    env = review_env
    base = masks()["reader1"]
    shifted = np.zeros(SHAPE, np.uint8)
    shifted[2:9, 21:51, 20:50] = 3  # liver one row lower: Dice 29/30 with the others
    shifted[4:7, 25:32, 25:32] = 1
    known = {"reader1": base, "reader2": base.copy(), "reader3": shifted}
    for reader in READERS:
        save_and_submit(env, reader, known[reader])
    approve_all_reads(env)  # the service path (the routes are covered above)
    with session_scope(env.sessions) as session:
        [result] = repository.consensus_results(session, env.item_id)
        arrays = [known[r] for r in READERS]
        expected_min = min(numpy_dice(a == label, b == label) for label in (1, 3)
                           for a, b in combinations(arrays, 2))
        assert result.min_dice == pytest.approx(expected_min, abs=1e-9)
        assert result.min_dice >= THRESHOLD
        assert session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                  Task.purpose == "arbitration")).all() == []
        final = repository.final_label(session, env.item_id)
        assert final is not None and (final.source, final.consensus_id) == ("consensus", result.id)


def test_staple_consensus_with_seniority_weights_records_each_readers_agreement(review_env: ReviewEnv) -> None:
    """The project asks for STAPLE with reader1 weighted 3 (the others 1 by role): the stored weights are
    normalised, the majority vote kept for comparison is reader1's mask (3/5 of the weight), and every Dice
    stored equals plain numpy on the consensus SEG read back from Orthanc."""
    env = review_env
    with session_scope(env.sessions) as session:
        apply_dict(session, project_dict(**project_settings(
            consensus={"method": "staple", "weights": {"roles": {"annotator": 1}, "users": {"reader1": 3}}})))
    known = masks()
    versions = {reader: save_and_submit(env, reader, known[reader]) for reader in READERS}
    approve_all_reads(env)
    with session_scope(env.sessions) as session:
        [result] = repository.consensus_results(session, env.item_id)
        assert result.method == "staple"
        assert result.reader_weights == pytest.approx(
            {str(versions["reader1"]): 0.6, str(versions["reader2"]): 0.2, str(versions["reader3"]): 0.2})
        sop_uid, agreement, comparison = result.sop_instance_uid, result.reader_agreement, result.comparison
        final = repository.final_label(session, env.item_id)
        assert final is not None and (final.source, final.consensus_id) == ("consensus", result.id)
    assert sop_uid is not None and agreement is not None and comparison is not None
    seg = seg_of(env, sop_uid)
    assert seg.ContentDescription == "staple consensus of 3 reads"  # type: ignore[attr-defined]
    consensus = read_label_array(seg, env.source)  # type: ignore[arg-type]
    weighted_majority = known["reader1"]  # reader1 alone holds more than half of the weight
    assert comparison["method"] == "majority"
    for label in (1, 3):
        assert comparison["dice_to_consensus"][str(label)] == pytest.approx(  # type: ignore[index]
            numpy_dice(weighted_majority == label, consensus == label), abs=1e-12)
        for reader in READERS:
            assert agreement[str(versions[reader])][str(label)] == pytest.approx(
                numpy_dice(known[reader] == label, consensus == label), abs=1e-12)
    # STAPLE, like the vote, keeps the lesion where two of three readers drew it.
    assert agreement[str(versions["reader1"])]["1"] > agreement[str(versions["reader3"])]["1"]
