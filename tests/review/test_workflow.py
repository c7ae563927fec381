"""Review workflow end to end on a real Orthanc and database: three readers save SEGs of known masks, a
reviewer rejects one read, the reader fixes and resubmits, all are approved -> consensus whose Dice numbers
match an independent numpy computation, the consensus SEG is in Orthanc, and a disagreement below the
threshold gives exactly one arbitration task however often the item is finished."""

from __future__ import annotations

import hashlib
import io
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

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import save_label_array
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.db.base import utcnow
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review import repository, workflow
from pacslabel.review.models import ConsensusResult, FinalLabel, ReviewDecision
from pacslabel.review.routes import router as review_router
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from pacslabel.users import service as user_service
from pacslabel.users.models import User
from tests.annotations.conftest import dciodvfy_errors
from tests.annotations.test_versions_env import _store_study, build_app, protocol
from tests.fixtures.orthanc import RunningOrthanc
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
    settings = orthanc.settings.model_copy(update={"database_url": db_url, "var_dir": tmp_path / "var"})
    engine = create_db_engine(db_url)
    sessions = make_sessionmaker(engine)
    headers: dict[str, dict[str, str]] = {}
    tasks: dict[str, int] = {}
    with session_scope(sessions) as session:
        users = {}
        for name, role in (("admin1", "admin"), ("rev1", "reviewer"), *((r, "annotator") for r in READERS)):
            users[name] = user_service.create_user(session, name, role, "a long enough password")
            headers[name] = {"Authorization": f"Bearer {user_service.create_api_token(session, name)}"}
        project = apply_dict(session, project_dict(
            slug="liver-review", name="Liver review",
            selection={"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]}, protocol=protocol(),
            readers_per_split={"train": 1, "validation": 3, "test": 3},
            review={"fractions": {"train": 0.0, "validation": 1.0, "test": 1.0}, "agreement_threshold": THRESHOLD}))
        datasets, study = _store_study(session, orthanc.client, "R")
        item = ProjectItem(project_id=project.id, unit="study", unit_uid=study.study_instance_uid,
                           study_id=study.id, patient_id=study.patient_id,
                           series_uids=[str(datasets[0].SeriesInstanceUID)], split="validation",
                           stage="continuous", needs_review=True, released_at=utcnow(),
                           order_key=hashlib.sha256(study.study_instance_uid.encode()).hexdigest())
        session.add(item)
        session.flush()
        for slot, name in enumerate(READERS):
            task = Task(project_id=project.id, item_id=item.id, reader_id=users[name].id, purpose="read",
                        slot=slot, status="in_progress", protocol_version=project.protocol_version,
                        claimed_at=utcnow())
            session.add(task)
            session.flush()
            tasks[name] = task.id
        item_id, study_uid = item.id, study.study_instance_uid
    app = build_app(settings)
    app.include_router(review_router)  # until the lead mounts it in create_app
    with TestClient(app) as client:
        yield ReviewEnv(client, orthanc.client, sessions, headers, tasks, item_id, study_uid,
                        SourceSeries.from_instances(datasets))
    engine.dispose()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.username == name))
    assert user is not None
    return user


def save_and_submit(env: ReviewEnv, reader: str, labels: np.ndarray, note: str | None = None) -> int:
    with session_scope(env.sessions) as session:
        user, task = _user(session, reader), session.get(Task, env.tasks[reader])
        assert task is not None
        version = save_label_array(session, env.orthanc, user, task, _npy(labels), SEGMENTS)
        version_id = version.id
    with session_scope(env.sessions) as session:
        user, task = _user(session, reader), session.get(Task, env.tasks[reader])
        assert task is not None
        if note:
            task_service.leave_note(session, task, user, note)
        task_service.submit_task(session, task, user)
    return version_id


def numpy_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def test_reject_fix_approve_consensus_and_one_arbitration_task(review_env: ReviewEnv, tmp_path: Path) -> None:
    env = review_env
    known = masks()
    v1 = save_and_submit(env, "reader1", known["reader1"])
    v2 = save_and_submit(env, "reader2", known["reader2"], note="is the lesion at slice 5 real?")
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
        review_task = task_service.claim_next_task(session, _user(session, "rev1"))
        assert review_task is not None and review_task.purpose == "review"
        review_task_id = review_task.id

    # Access and input checks.
    r3 = env.tasks["reader3"]
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

    # The reader gets it back on "Next", saves a fixed version and resubmits.
    with session_scope(env.sessions) as session:
        again = task_service.claim_next_task(session, _user(session, "reader3"))
        assert again is not None and again.id == r3 and again.status == "in_progress"
    fixed = save_and_submit(env, "reader3", known["reader3"])
    assert fixed != draft

    for reader in READERS:
        approved = env.client.post(f"/api/review/tasks/{env.tasks[reader]}/approve", headers=env.headers["rev1"])
        assert approved.status_code == 200, approved.text
        assert approved.json()["task_status"] == "done"
    assert env.client.post(f"/api/review/tasks/{r3}/approve", headers=env.headers["rev1"]).status_code == 409

    with session_scope(env.sessions) as session:
        decisions = repository.decisions_of_task(session, r3)
        assert [(d.decision, d.reason, d.annotation_version_id) for d in decisions] == [
            ("reject", "incomplete segmentation", draft), ("approve", None, fixed)]
        review_task = session.get(Task, review_task_id)
        assert review_task is not None and review_task.status == "done"
        [result] = session.scalars(select(ConsensusResult).where(ConsensusResult.item_id == env.item_id)).all()
        assert result.inputs == sorted([v1, v2, fixed])
        assert result.method == "majority"
        # Independent computation on the known masks.
        arrays = [known[r] for r in READERS]
        expected = {str(label): float(np.mean([numpy_dice(a == label, b == label)
                                               for a, b in combinations(arrays, 2)])) for label in (1, 3)}
        assert set(result.mean_dice) == set(expected)
        for label, value in expected.items():
            assert result.mean_dice[label] == pytest.approx(value, abs=1e-9)
        all_pairs = [numpy_dice(a == label, b == label) for label in (1, 3) for a, b in combinations(arrays, 2)]
        assert result.min_dice == pytest.approx(min(all_pairs), abs=1e-9)
        assert result.min_dice == 0.0 < THRESHOLD
        assert len(result.pairs) == 6
        sop_uid = result.sop_instance_uid
        assert sop_uid is not None
        [final] = session.scalars(select(FinalLabel).where(FinalLabel.item_id == env.item_id)).all()
        assert (final.source, final.consensus_id) == ("consensus", result.id)
        arbitration = session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                         Task.purpose == "arbitration")).all()
        assert len(arbitration) == 1 and arbitration[0].reader_id == _user(session, "rev1").id

    # The consensus SEG is in Orthanc and is the majority vote of the known masks.
    orthanc_id = env.orthanc.find_instance(sop_uid)
    assert orthanc_id is not None
    seg = dcmread(io.BytesIO(env.orthanc.get_instance_file(orthanc_id)))
    assert seg.SeriesDescription == "consensus"
    stacked = np.stack(arrays)
    vote = np.zeros(SHAPE, np.uint8)
    for label in (1, 3):
        vote[(stacked == label).sum(axis=0) >= 2] = label
    np.testing.assert_array_equal(read_label_array(seg, env.source), vote)
    assert dciodvfy_errors(seg, tmp_path) == []

    # Finishing the item again (a retry, a second approval racing) changes nothing: one consensus, one
    # arbitration task, one final label.
    for _ in range(2):
        with session_scope(env.sessions) as session:
            item = session.get(ProjectItem, env.item_id)
            assert item is not None
            workflow.finish_item(session, env.orthanc, item, _user(session, "rev1"))
    with session_scope(env.sessions) as session:
        assert len(repository.consensus_results(session, env.item_id)) == 1
        assert len(session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                      Task.purpose == "arbitration")).all()) == 1
        assert len(session.scalars(select(FinalLabel)).all()) == 1
        assert len(session.scalars(select(ReviewDecision)).all()) == 4


def test_agreement_above_threshold_gives_a_consensus_final_label_and_no_arbitration(review_env: ReviewEnv) -> None:
    env = review_env
    base = masks()["reader1"]
    shifted = np.zeros(SHAPE, np.uint8)
    shifted[2:9, 21:51, 20:50] = 3  # liver one row lower: Dice 29/30 with the others
    shifted[4:7, 25:32, 25:32] = 1
    known = {"reader1": base, "reader2": base.copy(), "reader3": shifted}
    for reader in READERS:
        save_and_submit(env, reader, known[reader])
    for reader in READERS:  # the service path (the routes are covered above)
        with session_scope(env.sessions) as session:
            read_task = session.get(Task, env.tasks[reader])
            assert read_task is not None
            workflow.approve(session, None, _user(session, "rev1"), read_task, orthanc=env.orthanc)
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
