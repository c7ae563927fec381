"""Reuse of the ML role's released view while the released data is unchanged (issue 6).

The ML role sees the released data (``export/released.py``), the same for every ML user with the same
test-split grants. Computing it reads every released item, so it is kept per database and per set of
test-split grants, and reused while its *release epoch* is unchanged. The epoch is checked on every use:

- the database epoch, one statement of aggregates over what the view is computed from: the final labels
  (count, ids, times, what they reference), the released items of the test split (a split change), every
  annotation version (a new draft), the finished reads (individual reads), the projects (``updated_at``, set
  when a project file is loaded), the catalogue series and the consensus results (count and newest id);
- the process generation, bumped when a session of this process writes (flush or ORM statement) one of the
  tables the view is computed from, and again when that session commits or rolls back.

In this process, any change made through the ORM is seen by the next request, including in-place edits. From
another process (a CLI command, another web worker), a new or replaced or removed release, a new annotation
version, a split change of a released item, a read finished or reopened, a project file loaded, a new
catalogue series or consensus result changes the database epoch and is seen by the next request; an in-place
edit from another process that changes none of these aggregates (a catalogue series' modality or a consensus
result's series rewritten in place, an item's series list edited by hand) is not, until this process
restarts or writes one of those tables itself. The application never makes such edits.

A view computed by a session with uncommitted writes to those tables is never stored (it could show what is
rolled back), and such a session never uses a stored view (it must see its own writes). The test-split grants
are not part of the epoch: they are read on every request and are the key.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, event, func, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.review.models import ConsensusResult, FinalLabel
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus

V = TypeVar("V")

_WATCHED_MODELS = (FinalLabel, ProjectItem, Project, Task, AnnotationVersion, CatalogSeries, CatalogStudy,
                   ConsensusResult)
_WATCHED_TABLES = frozenset(model.__tablename__ for model in _WATCHED_MODELS)
_WRITES = "pacslabel_release_writes"  # Session.info key: uncommitted writes to a watched table
_PER_ENGINE = 16  # distinct sets of test-split grants kept per database
_lock = threading.Lock()
_generation = 0
_views: weakref.WeakKeyDictionary[Engine, dict[frozenset[int], tuple[int, tuple[Any, ...], Any]]] = (
    weakref.WeakKeyDictionary())


def _bump() -> None:
    global _generation
    with _lock:
        _generation += 1


def generation() -> int:
    return _generation


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    if any(isinstance(obj, _WATCHED_MODELS) for group in (session.new, session.dirty, session.deleted)
           for obj in group):
        session.info[_WRITES] = True
        _bump()


@event.listens_for(Session, "do_orm_execute")
def _orm_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in _WATCHED_TABLES:
            state.session.info[_WRITES] = True
            _bump()


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _transaction_end(session: Session) -> None:
    if session.info.pop(_WRITES, False):
        _bump()


@event.listens_for(Session, "after_soft_rollback")
def _savepoint_rollback(session: Session, _previous: Any) -> None:
    if session.info.get(_WRITES):
        _bump()


def _epoch_statement() -> Any:
    def one(column: Any, *where: Any) -> Any:
        return select(column).where(*where).scalar_subquery() if where else select(column).scalar_subquery()

    def released_test(column: Any) -> Any:  # a released item moved into or out of the test split
        return (select(column).select_from(ProjectItem).join(FinalLabel, FinalLabel.item_id == ProjectItem.id)
                .where(ProjectItem.split == "test").scalar_subquery())

    finished_read = and_(Task.purpose == TaskPurpose.READ.value, Task.status == TaskStatus.DONE.value)
    return select(
        one(func.count(FinalLabel.id)), one(func.max(FinalLabel.id)), one(func.max(FinalLabel.updated_at)),
        one(func.sum(FinalLabel.item_id)), one(func.sum(func.coalesce(FinalLabel.annotation_version_id, 0))),
        one(func.sum(func.coalesce(FinalLabel.consensus_id, 0))),
        released_test(func.count(ProjectItem.id)), released_test(func.sum(ProjectItem.id)),
        one(func.count(AnnotationVersion.id)), one(func.max(AnnotationVersion.id)),
        one(func.count(Task.id), finished_read), one(func.sum(Task.id), finished_read),
        one(func.count(Project.id)), one(func.max(Project.updated_at)),
        one(func.count(CatalogSeries.id)), one(func.max(CatalogSeries.id)),
        one(func.count(ConsensusResult.id)), one(func.max(ConsensusResult.id)))


_EPOCH = _epoch_statement()


def epoch(session: Session) -> tuple[Any, ...]:
    """The database's release epoch (one statement)."""
    return tuple(session.execute(_EPOCH).one())


def released_view(session: Session, test_projects: frozenset[int], compute: Callable[[], V]) -> V:
    """The view for ``test_projects``: the stored one while the epoch and the generation are unchanged, else
    ``compute()`` (stored when the session has no uncommitted writes to the watched tables). The view must
    not be changed by its users: it is shared."""
    if session.info.get(_WRITES):
        return compute()
    engine = session.get_bind().engine
    current = _generation  # read before the data: a write after this point makes the stored view stale
    now = epoch(session)
    with _lock:
        stored = _views.get(engine, {}).get(test_projects)
    if stored is not None and stored[0] == current and stored[1] == now:
        return stored[2]  # type: ignore[no-any-return]
    view = compute()
    if not session.info.get(_WRITES):
        with _lock:
            per_engine = _views.setdefault(engine, {})
            if len(per_engine) >= _PER_ENGINE and test_projects not in per_engine:
                per_engine.pop(next(iter(per_engine)))
            per_engine[test_projects] = (current, now, view)
    return view


def forget() -> None:
    """Drop every stored view (tests; an operator's manual edit)."""
    with _lock:
        _views.clear()
    _bump()
