"""The ML role's access snapshot costs a fixed number of SQL statements whatever the number of released items
(issue 6: a QIDO by an ML engineer must not cost a second), and stays exact at that size: drafts beside a
released version stay hidden instance by instance, label series without drafts are visible whole.

These sessions hold uncommitted writes, so the view is always computed (never taken from the store of
``release_epoch.py``, tested in ``test_release_epoch.py``): the statements counted are the computation's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

from pacslabel.access.policy import AccessPolicy, AccessSnapshot, take_snapshot
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.db.base import utcnow
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.review.models import FinalLabel
from pacslabel.tasks.models import Task
from pacslabel.users.models import User

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# More than two IN-list chunks of the old code (500 values each): a chunked query would show up as more
# statements here.
MANY = 1203


def _version(task: Task, study: str, series: str, sop: str, version: int, author: User) -> AnnotationVersion:
    return AnnotationVersion(task_id=task.id, study_instance_uid=study, series_instance_uid=series,
                             sop_instance_uid=sop, sop_class_uid=SEG_CLASS, modality="SEG", version=version,
                             author_id=author.id, author_role="annotator", origin="api",
                             sha256=hashlib.sha256(sop.encode()).hexdigest(), byte_size=1, repairs=[])


def _release(session: Session, project: Project, reader: User, first: int, count: int) -> None:
    """``count`` released study items: one CT source series each and a single-read final SEG; every other
    item also has a draft (version 1) in the label's series. Added in bulk (a flush per table)."""
    numbers = range(first, first + count)
    patients = [CatalogPatient(pseudonym=f"P{n}") for n in numbers]
    session.add_all(patients)
    session.flush()
    studies = [CatalogStudy(study_instance_uid=f"1.2.826.0.7.{n}", patient_id=p.id)
               for n, p in zip(numbers, patients, strict=True)]
    session.add_all(studies)
    session.flush()
    session.add_all(CatalogSeries(series_instance_uid=f"{s.study_instance_uid}.1", study_id=s.id, modality="CT",
                                  route="test", instance_count=10) for s in studies)
    items = [ProjectItem(project_id=project.id, unit="study", unit_uid=s.study_instance_uid, study_id=s.id,
                         patient_id=s.patient_id, series_uids=[f"{s.study_instance_uid}.1"], split="train",
                         stage="continuous", order_key=str(n)) for n, s in zip(numbers, studies, strict=True)]
    session.add_all(items)
    session.flush()
    tasks = [Task(project_id=project.id, item_id=item.id, reader_id=reader.id, purpose="read", slot=0, status="done",
                  protocol_version=1) for item in items]
    session.add_all(tasks)
    session.flush()
    finals = []
    for n, study, task in zip(numbers, studies, tasks, strict=True):
        uid = study.study_instance_uid
        if n % 2:
            session.add(_version(task, uid, f"{uid}.9", f"{uid}.9.1", 1, reader))
        finals.append(_version(task, uid, f"{uid}.9", f"{uid}.9.2", 2, reader))
    session.add_all(finals)
    session.flush()
    session.add_all(FinalLabel(item_id=task.item_id, source="single_read", annotation_version_id=final.id,
                               updated_at=utcnow()) for task, final in zip(tasks, finals, strict=True))
    session.flush()


@contextmanager
def _counting(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def _ml_snapshot(session: Session, ml: User) -> tuple[AccessSnapshot, list[str]]:
    with _counting(session) as statements:
        snapshot = take_snapshot(AccessPolicy(session, ml))
    return snapshot, statements


def _check(snapshot: AccessSnapshot, numbers: range) -> None:
    for n in numbers:
        uid = f"1.2.826.0.7.{n}"
        assert snapshot.series[uid] == {f"{uid}.1", f"{uid}.9"}
        assert snapshot.can_see_instance(uid, f"{uid}.9", f"{uid}.9.2")
        if n % 2:  # a draft beside the released version: only the released instance
            assert snapshot.restricted_instances(uid, f"{uid}.9") == {f"{uid}.9.2"}
            assert not snapshot.can_see_instance(uid, f"{uid}.9", f"{uid}.9.1")
        else:  # nothing but the released version: visible whole (no per-instance check)
            assert snapshot.restricted_instances(uid, f"{uid}.9") is None


def test_the_ml_snapshot_takes_the_same_five_statements_for_3_or_1206_released_items(db_session: Session) -> None:
    reader, ml = User(username="reader", role="annotator"), User(username="ml", role="ml")
    # Individual reads allowed: the most expensive variant of the ML branch (finished reads are looked at).
    project = Project(slug="cost", name="cost", definition={"export": {"individual_reads": True}},
                      definition_sha256="0" * 64)
    db_session.add_all([reader, ml, project])
    db_session.flush()

    _release(db_session, project, reader, 0, 3)
    few, few_statements = _ml_snapshot(db_session, ml)
    assert few.studies is not None and len(few.studies) == 3
    _check(few, range(3))

    _release(db_session, project, reader, 3, MANY)
    many, many_statements = _ml_snapshot(db_session, ml)
    assert many.studies is not None and len(many.studies) == 3 + MANY
    assert sum(len(series) for series in many.instances.values()) == (3 + MANY) // 2  # the odd items
    _check(many, range(3 + MANY))
    assert len(few_statements) == len(many_statements) == 5, many_statements


def test_without_individual_reads_no_project_needs_the_tasks_and_drafts_stay_hidden(db_session: Session) -> None:
    reader, ml = User(username="reader", role="annotator"), User(username="ml", role="ml")
    project = Project(slug="plain", name="plain", definition={}, definition_sha256="0" * 64)
    db_session.add_all([reader, ml, project])
    db_session.flush()
    _release(db_session, project, reader, 0, 4)
    snapshot, statements = _ml_snapshot(db_session, ml)
    _check(snapshot, range(4))
    assert len(statements) == 5
    assert not any(" tasks" in statement.split("FROM", 1)[-1] for statement in statements), statements


def test_a_label_version_recorded_under_another_study_still_hides_its_drafts(db_session: Session) -> None:
    """A final label whose version row names another study than its item's (never seen in practice): the
    versions of that study are searched too, so the draft beside the label stays hidden."""
    reader, ml = User(username="reader", role="annotator"), User(username="ml", role="ml")
    project = Project(slug="odd", name="odd", definition={}, definition_sha256="0" * 64)
    db_session.add_all([reader, ml, project])
    db_session.flush()
    _release(db_session, project, reader, 0, 2)  # item 0: no draft, item 1: a draft
    elsewhere = "1.2.826.0.7.99"
    for version in db_session.query(AnnotationVersion).filter(
            AnnotationVersion.study_instance_uid == "1.2.826.0.7.0"):
        version.study_instance_uid = elsewhere
    db_session.flush()
    snapshot, statements = _ml_snapshot(db_session, ml)
    assert len(statements) == 5
    assert snapshot.restricted_instances("1.2.826.0.7.0", "1.2.826.0.7.0.9") is None  # no draft: whole
    task = db_session.query(Task).order_by(Task.id).first()
    assert task is not None
    db_session.add(_version(task, elsewhere, "1.2.826.0.7.0.9", "1.2.826.0.7.0.9.7", 3, reader))  # a draft
    db_session.flush()
    snapshot, _ = _ml_snapshot(db_session, ml)
    assert snapshot.restricted_instances("1.2.826.0.7.0", "1.2.826.0.7.0.9") == {"1.2.826.0.7.0.9.2"}
    assert not snapshot.can_see_instance("1.2.826.0.7.0", "1.2.826.0.7.0.9", "1.2.826.0.7.0.9.7")
    assert not snapshot.can_see_study(elsewhere)
