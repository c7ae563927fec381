"""Task states: illegal transitions are refused with a clear message; skip and exclude need a reason from the
protocol; skipping frees the slot; explicit assignment respects the slots; actions are audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.audit.models import AuditEvent
from pacslabel.errors import BadInput, Conflict
from pacslabel.projects.models import ProjectItem
from pacslabel.projects.service import sync_project_items
from pacslabel.tasks.service import (
    assign_task,
    claim_next_task,
    exclude_task,
    leave_note,
    mark_done,
    return_to_reader,
    skip_task,
    submit_task,
)
from pacslabel.tasks.states import ALLOWED_TRANSITIONS, TaskStatus
from tests.projects.helpers import add_series, apply_dict, make_user, project_dict

ONE_READER = {"train": 1, "validation": 1, "test": 1}


def _project(session: Session, **overrides: object):  # type: ignore[no-untyped-def]
    add_series(session, "P1", "s1", "t2")
    project = apply_dict(session, project_dict(readers_per_split=ONE_READER, **overrides))
    sync_project_items(session, project)
    return project


def test_every_state_has_a_transition_entry_and_final_states_have_none() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(TaskStatus)
    assert ALLOWED_TRANSITIONS[TaskStatus.DONE] == frozenset()
    assert ALLOWED_TRANSITIONS[TaskStatus.SKIPPED] == frozenset()


def test_illegal_transitions_are_refused_with_a_clear_message(db_session: Session) -> None:
    _project(db_session)
    reader = make_user(db_session, "reader1")
    task = claim_next_task(db_session, reader)
    assert task is not None
    submit_task(db_session, task, reader)
    assert task.status == TaskStatus.DONE.value and task.submitted_at is not None
    with pytest.raises(Conflict) as caught:
        submit_task(db_session, task, reader)
    assert caught.value.message == (f"task {task.id} is done; it cannot become submitted "
                                    "(from done it can become: nothing (final state))")
    with pytest.raises(Conflict):
        skip_task(db_session, task, reader, "images do not load")


def test_skip_needs_a_protocol_reason_and_frees_the_slot(db_session: Session) -> None:
    _project(db_session)
    first, second = make_user(db_session, "reader1"), make_user(db_session, "reader2")
    task = claim_next_task(db_session, first)
    assert task is not None
    with pytest.raises(BadInput) as caught:
        skip_task(db_session, task, first, "bored")
    assert "images do not load" in caught.value.message
    skip_task(db_session, task, first, "images do not load")
    assert task.status == TaskStatus.SKIPPED.value and task.slot is None
    assert claim_next_task(db_session, first) is None  # never the same item again
    other = claim_next_task(db_session, second)
    assert other is not None and other.item_id == task.item_id and other.slot == 0


def test_exclude_needs_a_protocol_reason_and_keeps_the_note(db_session: Session) -> None:
    _project(db_session)
    reader = make_user(db_session, "reader1")
    task = claim_next_task(db_session, reader)
    assert task is not None
    with pytest.raises(BadInput):
        exclude_task(db_session, task, reader, "looks odd")
    exclude_task(db_session, task, reader, "artifact", note="Motion on every slice")
    assert task.exclusion_reason == "artifact" and task.note == "Motion on every slice"
    assert task.status == TaskStatus.DONE.value
    actions = [e.action for e in db_session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert "task_claim" in actions and "task_exclude" in actions


def test_reviewed_reads_wait_in_submitted_and_can_be_returned_and_reclaimed(db_session: Session) -> None:
    review = {"fractions": {"train": 1.0, "validation": 1.0, "test": 1.0}}
    _project(db_session, review=review)
    reader = make_user(db_session, "reader1")
    reviewer = make_user(db_session, "senior1", "reviewer")
    task = claim_next_task(db_session, reader)
    assert task is not None
    leave_note(db_session, task, reader, "Could you check this lesion?")
    submit_task(db_session, task, reader)
    assert task.status == TaskStatus.SUBMITTED.value
    review_task = claim_next_task(db_session, reviewer)
    assert review_task is not None and review_task.purpose == "review" and review_task.item_id == task.item_id
    with pytest.raises(BadInput):
        return_to_reader(db_session, task, "senior1", "not a listed reason")
    return_to_reader(db_session, task, "senior1", "wrong label")
    assert task.status == TaskStatus.RETURNED.value
    again = claim_next_task(db_session, reader)
    assert again is not None and again.id == task.id and again.status == TaskStatus.IN_PROGRESS.value
    submit_task(db_session, again, reader)
    mark_done(db_session, again, "senior1")
    assert again.status == TaskStatus.DONE.value


def test_a_returned_read_is_resubmitted_from_its_page_without_pressing_next(db_session: Session) -> None:
    _project(db_session, review={"fractions": {"train": 1.0, "validation": 1.0, "test": 1.0}})
    reader = make_user(db_session, "reader1")
    make_user(db_session, "senior1", "reviewer")
    task = claim_next_task(db_session, reader)
    assert task is not None
    submit_task(db_session, task, reader)
    return_to_reader(db_session, task, "senior1", "wrong label")
    submit_task(db_session, task, reader)
    assert task.status == TaskStatus.SUBMITTED.value
    actions = [e.action for e in db_session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[-3:] == ["task_return", "task_claim", "task_submit"]


def test_explicit_assignment_respects_slots_and_is_served_by_next(db_session: Session) -> None:
    _project(db_session)
    first, second = make_user(db_session, "reader1"), make_user(db_session, "reader2")
    item = db_session.scalars(select(ProjectItem)).one()
    assigned = assign_task(db_session, item, first, "read", actor="admin1")
    assert assigned.status == TaskStatus.OPEN.value and assigned.assigned_by == "admin1"
    with pytest.raises(Conflict) as caught:
        assign_task(db_session, item, second, "read", actor="admin1")
    assert "already has its 1 readers" in caught.value.message
    assert claim_next_task(db_session, second) is None
    served = claim_next_task(db_session, first)
    assert served is not None and served.id == assigned.id and served.status == TaskStatus.IN_PROGRESS.value
