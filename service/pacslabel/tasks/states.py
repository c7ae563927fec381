"""Task purposes, states and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from pacslabel.errors import Conflict


class TaskPurpose(StrEnum):
    READ = "read"
    REPEAT = "repeat"  # intra-rater repeat; shown to the reader as an ordinary read
    REVIEW = "review"
    ARBITRATION = "arbitration"


class TaskStatus(StrEnum):
    OPEN = "open"  # exists for a reader (assigned, a repeat waiting, or created) but not started
    IN_PROGRESS = "in_progress"  # claimed by its reader
    SUBMITTED = "submitted"  # reader finished (or excluded the item); waiting for review if any
    RETURNED = "returned"  # a reviewer sent it back with a reason; the reader works on it again
    DONE = "done"
    SKIPPED = "skipped"  # reader could not read it (reason from the protocol); the slot is freed


ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.OPEN: frozenset({TaskStatus.IN_PROGRESS, TaskStatus.SKIPPED}),
    TaskStatus.IN_PROGRESS: frozenset({TaskStatus.SUBMITTED, TaskStatus.SKIPPED}),
    TaskStatus.SUBMITTED: frozenset({TaskStatus.DONE, TaskStatus.RETURNED}),
    TaskStatus.RETURNED: frozenset({TaskStatus.IN_PROGRESS}),
    TaskStatus.DONE: frozenset(),
    TaskStatus.SKIPPED: frozenset(),
}

# States in which the reader still owes work; "Next" hands these back before anything new.
UNFINISHED = (TaskStatus.IN_PROGRESS, TaskStatus.RETURNED)
# States in which a read counts as read (for review readiness and repeat gaps).
READ_COMPLETE = (TaskStatus.SUBMITTED, TaskStatus.DONE)


def check_transition(task_id: int, current: str, target: TaskStatus) -> None:
    state = TaskStatus(current)
    if target not in ALLOWED_TRANSITIONS[state]:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[state])) or "nothing (final state)"
        raise Conflict(f"task {task_id} is {state.value}; it cannot become {target.value} "
                       f"(from {state.value} it can become: {allowed})")
