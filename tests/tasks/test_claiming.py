"""Claiming ("Next"): distinct readers per item, never a slot twice, safe under concurrent presses from
threads with their own sessions (SQLite and PostgreSQL), calibration first, unfinished work first, repeats."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.service import sync_project_items
from pacslabel.tasks.models import Task
from pacslabel.tasks.service import claim_next_task, submit_task
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import User
from tests.projects.helpers import add_series, apply_dict, make_user, project_dict

VALIDATION_ONLY = {"ratios": {"train": 0.0, "validation": 1.0, "test": 0.0}}
TRAIN_ONLY = {"ratios": {"train": 1.0, "validation": 0.0, "test": 0.0}}


def _setup(session: Session, patients: int, readers: int, **overrides: Any) -> tuple[Project, list[User]]:
    for p in range(patients):
        add_series(session, f"P{p:03d}", "s1", "t2")
    project = apply_dict(session, project_dict(**{"split": VALIDATION_ONLY, **overrides}))
    sync_project_items(session, project)
    users = [make_user(session, f"reader{i}") for i in range(readers)]
    session.commit()
    return project, users


def _reads_per_item(session: Session) -> dict[int, list[int]]:
    result: dict[int, list[int]] = defaultdict(list)
    for task in session.scalars(select(Task).where(Task.purpose == TaskPurpose.READ.value)):
        result[task.item_id].append(task.reader_id)
    return result


def _reader_loop(factory: sessionmaker[Session], user_id: int, start: threading.Barrier,
                 errors: list[BaseException], claimed: list[int]) -> None:
    try:
        start.wait()
        while True:
            with factory() as session:
                user = session.get(User, user_id)
                assert user is not None
                task = claim_next_task(session, user)
                if task is None:
                    session.commit()
                    return
                claimed.append(task.id)
                submit_task(session, task, user)
                session.commit()
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


@pytest.mark.postgres
@pytest.mark.parametrize("readers,threads_per_reader", [(3, 1), (5, 2)])
def test_concurrent_next_gives_every_item_exactly_its_readers(session_factory: sessionmaker[Session],
                                                              readers: int, threads_per_reader: int) -> None:
    with session_factory() as session:
        _project, users = _setup(session, patients=12, readers=readers)
        user_ids = [u.id for u in users]
    threads_total = readers * threads_per_reader
    start = threading.Barrier(threads_total)
    errors: list[BaseException] = []
    claimed: list[int] = []
    threads = [threading.Thread(target=_reader_loop, args=(session_factory, uid, start, errors, claimed))
               for uid in user_ids for _ in range(threads_per_reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with session_factory() as session:
        reads = _reads_per_item(session)
        items = session.scalars(select(ProjectItem)).all()
        assert len(items) == 12 and all(i.split == "validation" for i in items)
        for item in items:
            assert len(reads[item.id]) == 3, (item.id, reads[item.id])  # exactly its readers
            assert len(set(reads[item.id])) == 3  # all distinct
        slots = Counter((t.item_id, t.slot) for t in session.scalars(select(Task)))
        assert max(slots.values()) == 1  # no slot double-claimed
        assert all(t.status == TaskStatus.DONE.value for t in session.scalars(select(Task)))
    # Two presses by the same reader at once may hand back the same unfinished task; never more tasks than slots.
    assert len(set(claimed)) == 36


def test_the_database_refuses_a_double_claimed_slot_or_a_second_read(db_session: Session) -> None:
    project, users = _setup(db_session, patients=1, readers=2)
    item = db_session.scalars(select(ProjectItem)).one()

    def task(user: User, slot: int | None) -> Task:
        return Task(project_id=project.id, item_id=item.id, reader_id=user.id, purpose="read", slot=slot,
                    status="in_progress", protocol_version=1)

    db_session.add(task(users[0], 0))
    db_session.flush()
    for duplicate in (task(users[1], 0), task(users[0], 1)):
        with pytest.raises(IntegrityError):
            with db_session.begin_nested():
                db_session.add(duplicate)
                db_session.flush()


def test_a_reader_never_gets_the_same_item_twice_and_unfinished_work_comes_first(db_session: Session) -> None:
    _project, users = _setup(db_session, patients=4, readers=1)
    reader = users[0]
    first = claim_next_task(db_session, reader)
    assert first is not None
    again = claim_next_task(db_session, reader)
    assert again is not None and again.id == first.id  # the unfinished task, not a new one
    seen = {first.item_id}
    submit_task(db_session, first, reader)
    while (task := claim_next_task(db_session, reader)) is not None:
        assert task.item_id not in seen
        seen.add(task.item_id)
        submit_task(db_session, task, reader)
    assert len(seen) == 4


def test_calibration_items_come_first_and_are_read_by_every_reader(db_session: Session) -> None:
    release = {"calibration": {"items": 2, "split": "train"}, "first_batch": {"items": 0}, "continuous": True}
    _project, users = _setup(db_session, patients=6, readers=3, split=TRAIN_ONLY, release=release)
    calibration = {i.id for i in db_session.scalars(select(ProjectItem).where(ProjectItem.stage == "calibration"))}
    assert len(calibration) == 2
    for user in users:
        for _ in range(2):
            task = claim_next_task(db_session, user)
            assert task is not None and task.item_id in calibration
            submit_task(db_session, task, user)
    reads = _reads_per_item(db_session)
    assert all(len(set(reads[item_id])) == 3 for item_id in calibration)


def test_repeats_come_back_later_to_the_same_reader(db_session: Session) -> None:
    repeats = {"fraction": 1.0, "min_gap_tasks": 2}
    _project, users = _setup(db_session, patients=3, readers=1, split=TRAIN_ONLY, repeats=repeats)
    reader = users[0]
    order: list[tuple[int, str]] = []
    while (task := claim_next_task(db_session, reader)) is not None:
        order.append((task.item_id, task.purpose))
        submit_task(db_session, task, reader)
    reads = [item for item, purpose in order if purpose == "read"]
    repeat_items = [item for item, purpose in order if purpose == "repeat"]
    assert len(reads) == 3 and sorted(repeat_items) == sorted(reads)
    first_repeat = next(i for i, (_, purpose) in enumerate(order) if purpose == "repeat")
    assert first_repeat >= 2  # not before the reader did at least 2 other tasks
    # The first repeat is of the first item read: at least two other reads lie between them.
    assert order[first_repeat][0] == order[0][0]
