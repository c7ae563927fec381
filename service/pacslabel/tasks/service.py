"""Task rules: "Next" (atomic claim), explicit assignment, submit / skip / exclude / note, repeats.

Correctness under concurrency rests on the constraints of `tasks` (see tasks.models): a claim picks a free slot
number below the split's reader count and inserts; if another process took that slot (or this reader already
has the item) the insert fails inside a savepoint and the next candidate is tried. Locks (SKIP LOCKED on
PostgreSQL, BEGIN IMMEDIATE on SQLite) only make such collisions rare.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput, Conflict, Forbidden, NotFound
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.schema import ProjectSpec
from pacslabel.projects.service import STAGE_CALIBRATION, may_read, may_review, project_spec
from pacslabel.projects.splits import keyed_fraction
from pacslabel.tasks import repository
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus, check_transition
from pacslabel.users.models import Role, User

MAX_NOTE_LENGTH = 4000
CLAIM_ROUNDS = 5


# --- transactions -------------------------------------------------------------------------------------------

def _begin_claim(session: Session) -> None:
    """On SQLite a claim must hold the write lock from its first read (BEGIN IMMEDIATE); a deferred
    transaction that read first could not upgrade once another process wrote. So whatever the session holds
    (e.g. the request's authentication) is committed and the claim starts its own transaction."""
    if session.get_bind().dialect.name != "sqlite":
        return
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})


def _try_insert(session: Session, task: Task) -> bool:
    """Insert inside a savepoint; False when a constraint says someone else was faster."""
    try:
        with session.begin_nested():
            session.add(task)
            session.flush()
    except IntegrityError:
        return False
    return True


# --- claiming -----------------------------------------------------------------------------------------------

def _reader_projects(session: Session, user: User, project: Project | str | None) -> list[tuple[Project, ProjectSpec]]:
    if project is None:
        projects = project_repository.list_projects(session, active_only=True)
    else:
        found = project if isinstance(project, Project) else project_repository.get_project_by_slug(session, project)
        if found is None:
            raise NotFound(f"no project {project!r}")
        projects = [found]
    result = []
    for candidate in projects:
        spec = project_spec(candidate)
        if candidate.active and (may_read(spec, user) or may_review(spec, user)):
            result.append((candidate, spec))
    return result


def _start(session: Session, task: Task, user: User) -> Task:
    check_transition(task.id, task.status, TaskStatus.IN_PROGRESS)
    task.status = TaskStatus.IN_PROGRESS.value
    task.claimed_at = task.claimed_at or utcnow()
    session.flush()
    record(session, user.username, "task_claim", "task", task.id, project_id=task.project_id,
           item_id=task.item_id, purpose=task.purpose)
    return task


def _new_task(project: Project, item: ProjectItem, user: User, purpose: TaskPurpose, slot: int | None,
              *, status: TaskStatus = TaskStatus.IN_PROGRESS, assigned_by: str | None = None,
              due_after_reads: int | None = None) -> Task:
    now = utcnow()
    return Task(project_id=project.id, item_id=item.id, reader_id=user.id, purpose=purpose.value, slot=slot,
                status=status.value, protocol_version=project.protocol_version, assigned_by=assigned_by,
                due_after_reads=due_after_reads, created_at=now,
                claimed_at=now if status == TaskStatus.IN_PROGRESS else None)


def _claim_slot(session: Session, project: Project, spec: ProjectSpec, item: ProjectItem, user: User,
                purpose: TaskPurpose, slots: int) -> Task | None:
    free = sorted(set(range(slots)) - repository.used_slots(session, item.id, purpose))
    for slot in free:
        task = _new_task(project, item, user, purpose, slot)
        if _try_insert(session, task):
            return task
    return None


def _claim_pass(session: Session, project: Project, spec: ProjectSpec, user: User,
                skip_locked: bool) -> tuple[Task | None, bool]:
    """One look at the candidates: (the claimed task or None, whether there were candidates at all)."""
    found = False
    if may_review(spec, user):
        for item in repository.review_candidates(session, project.id, user.id, spec, skip_locked=skip_locked):
            found = True
            if task := _claim_slot(session, project, spec, item, user, TaskPurpose.REVIEW, 1):
                return task, True
    if may_read(spec, user):
        for item in repository.calibration_candidates(session, project.id, user.id, skip_locked=skip_locked):
            found = True
            # Calibration items are read by every reader: no slot to compete for.
            task = _new_task(project, item, user, TaskPurpose.READ, None)
            if _try_insert(session, task):
                return task, True
        for item in repository.read_candidates(session, project.id, user.id, spec, skip_locked=skip_locked):
            found = True
            if task := _claim_slot(session, project, spec, item, user, TaskPurpose.READ,
                                   spec.readers_per_split.get(item.split)):
                return task, True
    return None, found


def _claim_new(session: Session, project: Project, spec: ProjectSpec, user: User) -> Task | None:
    for _attempt in range(CLAIM_ROUNDS):
        task, found = _claim_pass(session, project, spec, user, skip_locked=True)
        if task is not None:
            return task
        if not found:
            break
    # A last look without locks: an item another claimer holds right now may still have a free slot after its
    # commit (on PostgreSQL the insert then waits for that commit and the constraint decides).
    task, _found = _claim_pass(session, project, spec, user, skip_locked=False)
    return task


def claim_next_task(session: Session, user: User, project: Project | str | None = None) -> Task | None:
    """The reader pressed "Next": their unfinished task first, then an assigned task or a repeat that is due,
    then a review (reviewers), then calibration items, then a free reading slot. None when nothing is left.
    The caller commits. On SQLite the session's open transaction is committed first (see `_begin_claim`)."""
    _begin_claim(session)
    projects = _reader_projects(session, user, project)
    if not projects:
        return None
    ids = [p.id for p, _ in projects]
    unfinished = repository.unfinished_tasks(session, user.id, ids)
    if unfinished:
        task = unfinished[0]
        return _start(session, task, user) if task.status == TaskStatus.RETURNED else task
    reads_done: dict[int, int] = {}
    for task in repository.open_tasks(session, user.id, ids):
        if task.due_after_reads is not None:
            if task.project_id not in reads_done:
                reads_done[task.project_id] = repository.completed_reads(session, user.id, task.project_id)
            if reads_done[task.project_id] < task.due_after_reads:
                continue  # a repeat that is not due yet
        return _start(session, task, user)
    for candidate, spec in projects:
        task = _claim_new(session, candidate, spec, user)
        if task is not None:
            record(session, user.username, "task_claim", "task", task.id, project_id=task.project_id,
                   item_id=task.item_id, purpose=task.purpose, slot=task.slot)
            return task
    return None


# --- explicit assignment ------------------------------------------------------------------------------------

def assign_task(session: Session, item: ProjectItem, reader: User, purpose: TaskPurpose | str,
                actor: str = "admin") -> Task:
    """An admin gives `item` to `reader` (status open; the reader gets it on "Next")."""
    purpose = TaskPurpose(purpose)
    project = project_repository.get_project(session, item.project_id)
    assert project is not None
    spec = project_spec(project)
    locked = repository.lock_item(session, item.id) or item
    slot: int | None = None
    due: int | None = None
    if purpose == TaskPurpose.READ:
        if not may_read(spec, reader):
            raise Conflict(f"{reader.username} is not a reader of project {project.slug}")
        if locked.stage != STAGE_CALIBRATION:
            needed = spec.readers_per_split.get(locked.split)
            free = sorted(set(range(needed)) - repository.used_slots(session, item.id, purpose))
            if not free:
                raise Conflict(f"item {item.id} already has its {needed} readers")
            slot = free[0]
    elif purpose == TaskPurpose.REPEAT:
        first = repository.reader_task_on_item(session, item.id, reader.id, TaskPurpose.READ)
        if first is None or first.submitted_at is None:
            raise Conflict(f"{reader.username} has not read item {item.id}; a repeat needs a first read")
        due = 0
    else:
        if not may_review(spec, reader):
            raise Conflict(f"{reader.username} is not a reviewer of project {project.slug}")
        if repository.reader_task_on_item(session, item.id, reader.id, TaskPurpose.READ) is not None:
            raise Conflict(f"{reader.username} read item {item.id} and cannot also {purpose.value} it")
        slot = 0
    task = _new_task(project, locked, reader, purpose, slot, status=TaskStatus.OPEN, assigned_by=actor,
                     due_after_reads=due)
    if not _try_insert(session, task):
        raise Conflict(f"{reader.username} already has a {purpose.value} task on item {item.id}, "
                       f"or its {purpose.value} slot is taken")
    record(session, actor, "task_assign", "task", task.id, item_id=item.id, reader=reader.username,
           purpose=purpose.value)
    return task


# --- acting on a task ---------------------------------------------------------------------------------------

def task_for_user(session: Session, task_id: int, user: User, *, act: bool = False) -> Task:
    """The task if `user` may see it (its reader or an admin) or, with `act`, work on it (its reader only).
    404 when there is no such task, 403 for another reader's task (whose content is never shown)."""
    task = repository.get_task(session, task_id)
    is_admin = user.role == Role.ADMIN.value
    if task is None or (not is_admin and task.purpose == TaskPurpose.REPEAT.value
                        and task.status == TaskStatus.OPEN.value and task.reader_id == user.id):
        # A repeat that is not served yet does not exist for its reader (unannounced).
        raise NotFound(f"no task {task_id}")
    if task.reader_id != user.id and (act or not is_admin):
        raise Forbidden("this task belongs to another reader")
    return task


def _spec_of(session: Session, task: Task) -> tuple[Project, ProjectSpec]:
    project = project_repository.get_project(session, task.project_id)
    assert project is not None
    return project, project_spec(project)


def _protocol_reasons(session: Session, task: Task, pick: Callable[[dict], list[str]]) -> list[str]:
    # The reasons of the protocol version the task was read under, not of the newest one.
    version = project_repository.protocol_version(session, task.project_id, task.protocol_version)
    if version is None:
        _, spec = _spec_of(session, task)
        return pick(spec.protocol.model_dump())
    return pick(version.protocol)


def _finish_submission(session: Session, task: Task, actor: str, action: str, **detail: object) -> Task:
    project, spec = _spec_of(session, task)
    now = utcnow()
    check_transition(task.id, task.status, TaskStatus.SUBMITTED)
    task.status = TaskStatus.SUBMITTED.value
    task.submitted_at = now
    item = project_repository.get_item(session, task.item_id)
    assert item is not None
    # A read waits in "submitted" for its review; everything else is done at once.
    awaits_review = task.purpose == TaskPurpose.READ.value and item.needs_review and task.slot is not None
    if not awaits_review:
        check_transition(task.id, task.status, TaskStatus.DONE)
        task.status = TaskStatus.DONE.value
        task.finished_at = now
    session.flush()
    record(session, actor, action, "task", task.id, item_id=task.item_id, status=task.status, **detail)
    if task.purpose == TaskPurpose.READ.value:
        _maybe_schedule_repeat(session, project, spec, task, item)
    return task


def _maybe_schedule_repeat(session: Session, project: Project, spec: ProjectSpec, task: Task,
                           item: ProjectItem) -> None:
    """With the project's repeat fraction (a keyed, not random, choice), the same item comes back to the same
    reader after at least `min_gap_tasks` other submitted tasks, as an ordinary-looking read."""
    fraction = spec.repeats.fraction
    if fraction <= 0 or keyed_fraction(spec.slug, "repeat", item.id, task.reader_id) >= fraction:
        return
    if repository.reader_task_on_item(session, item.id, task.reader_id, TaskPurpose.REPEAT) is not None:
        return
    reader = session.get(User, task.reader_id)
    assert reader is not None
    due = repository.completed_reads(session, task.reader_id, project.id) + spec.repeats.min_gap_tasks
    repeat = _new_task(project, item, reader, TaskPurpose.REPEAT, None, status=TaskStatus.OPEN,
                       due_after_reads=due)
    if _try_insert(session, repeat):
        record(session, "system", "task_repeat_scheduled", "task", repeat.id, item_id=item.id,
               of_task=task.id, due_after_reads=due)


def start_task(session: Session, task: Task, user: User) -> Task:
    """The reader takes up an open task assigned to them (an arbitration, an admin's assignment) from its page,
    as "Next" would have. The caller has checked that ``task`` is the user's (``task_for_user(act=True)``)."""
    if task.status != TaskStatus.OPEN.value:
        raise Conflict(f"task {task.id} is {task.status.replace('_', ' ')}, not open: nothing to start")
    return _start(session, task, user)


def submit_task(session: Session, task: Task, user: User) -> Task:
    if task.status == TaskStatus.RETURNED.value:
        # A returned read is fixed and resubmitted from its own page: taking it up again is implied.
        _start(session, task, user)
    return _finish_submission(session, task, user.username, "task_submit")


def exclude_task(session: Session, task: Task, user: User, reason: str, note: str | None = None) -> Task:
    """The reader marks the item unusable (e.g. "wrong image", "artifact"); the reason must be in the
    protocol. It counts as a completed read: exclusion is a finding the ML team needs."""
    reasons = _protocol_reasons(session, task, lambda p: p["exclusion_reasons"])
    if reason not in reasons:
        raise BadInput(f"exclusion reason must be one of: {', '.join(reasons)}")
    task.exclusion_reason = reason
    if note:
        _set_note(task, note)
    return _finish_submission(session, task, user.username, "task_exclude", reason=reason)


def skip_task(session: Session, task: Task, user: User, reason: str) -> Task:
    """The reader cannot read it; the slot is freed for another reader, and this reader never gets the item
    again (their task row remains)."""
    reasons = _protocol_reasons(session, task, lambda p: p["skip_reasons"])
    if reason not in reasons:
        raise BadInput(f"skip reason must be one of: {', '.join(reasons)}")
    check_transition(task.id, task.status, TaskStatus.SKIPPED)
    task.status = TaskStatus.SKIPPED.value
    task.skip_reason = reason
    task.slot = None
    task.finished_at = utcnow()
    session.flush()
    record(session, user.username, "task_skip", "task", task.id, item_id=task.item_id, reason=reason)
    return task


def _set_note(task: Task, text: str) -> None:
    text = text.strip()
    if not text:
        raise BadInput("a note needs some text")
    if len(text) > MAX_NOTE_LENGTH:
        raise BadInput(f"a note has at most {MAX_NOTE_LENGTH} characters")
    task.note = text


def leave_note(session: Session, task: Task, user: User, text: str) -> Task:
    """A note or question from the reader to the reviewer ("could you check this lesion?")."""
    if task.status == TaskStatus.SKIPPED.value:
        raise Conflict(f"task {task.id} was skipped; notes are for tasks that are read")
    _set_note(task, text)
    session.flush()
    record(session, user.username, "task_note", "task", task.id, length=len(task.note or ""))
    return task


def return_to_reader(session: Session, task: Task, actor: str, reason: str) -> Task:
    """For review: send a submitted read back with a rejection reason from the protocol."""
    reasons = _protocol_reasons(session, task, lambda p: p["rejection_reasons"])
    if reason not in reasons:
        raise BadInput(f"rejection reason must be one of: {', '.join(reasons)}")
    check_transition(task.id, task.status, TaskStatus.RETURNED)
    task.status = TaskStatus.RETURNED.value
    session.flush()
    record(session, actor, "task_return", "task", task.id, reason=reason)
    return task


def mark_done(session: Session, task: Task, actor: str) -> Task:
    """For review: an approved read is done."""
    check_transition(task.id, task.status, TaskStatus.DONE)
    task.status = TaskStatus.DONE.value
    task.finished_at = utcnow()
    session.flush()
    record(session, actor, "task_done", "task", task.id)
    return task
