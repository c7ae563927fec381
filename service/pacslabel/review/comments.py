"""The comment thread of a task: reader and reviewers talk about one read, kept with the task and audited.

Who takes part in a task's thread (and sees what changed in it, see review.fix_changes): the task's reader,
the reviewers of its item (a review or arbitration task on the item, or a decision on this task) and admins.
Other readers of the item never do: blinding between readers holds for comments too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput, Forbidden, NotFound, PacslabelError
from pacslabel.review.models import ReviewDecision, TaskComment
from pacslabel.review.workflow import check_reviewer
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import Role, User

MAX_COMMENT_LENGTH = 4000
REVIEWING_PURPOSES = (TaskPurpose.REVIEW.value, TaskPurpose.ARBITRATION.value)


def reviews_item(session: Session, user: User, task: Task) -> bool:
    """The user reviews (or arbitrates) the task's item, or decided on this task."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Task.item_id == task.item_id, Task.reader_id == user.id, Task.purpose.in_(REVIEWING_PURPOSES)
                )
                | exists().where(ReviewDecision.task_id == task.id, ReviewDecision.reviewer_id == user.id)
            )
        )
    )


def may_follow(session: Session, user: User, task: Task) -> bool:
    return (user.role == Role.ADMIN.value or task.reader_id == user.id or reviews_item(session, user, task)
            or may_decide(session, user, task))


def may_decide(session: Session, user: User, task: Task) -> bool:
    """The task is a read waiting for review that ``user`` may approve or reject (from the review queue, without
    a review task of their own): they may ask its reader before deciding."""
    if task.purpose != TaskPurpose.READ.value or task.status != TaskStatus.SUBMITTED.value:
        return False
    try:
        check_reviewer(session, user, task)
    except PacslabelError:
        return False
    return True


def followed_task(session: Session, task_id: int, user: User) -> Task:
    """The task if the user takes part in its thread: 404 for no task, 403 for someone else's (as in the task
    API)."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if not may_follow(session, user, task):
        raise Forbidden(f"task {task_id} is not yours, and you do not review its item")
    return task


def comment_view(row: TaskComment, author: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.task_id,
        "author": author,
        "body": row.body,
        "created_at": row.created_at.isoformat(),
    }


def thread(session: Session, task: Task) -> list[dict[str, Any]]:
    rows = session.execute(
        select(TaskComment, User.username)
        .join(User, User.id == TaskComment.author_id)
        .where(TaskComment.task_id == task.id)
        .order_by(TaskComment.id)
    ).all()
    return [comment_view(row, username) for row, username in rows]


def post_comment(session: Session, task: Task, user: User, body: str) -> TaskComment:
    text = (body or "").strip()
    if not text:
        raise BadInput("a comment needs some text")
    if len(text) > MAX_COMMENT_LENGTH:
        raise BadInput(f"a comment has at most {MAX_COMMENT_LENGTH} characters, this one has {len(text)}")
    if not may_follow(session, user, task):
        raise Forbidden(f"task {task.id} is not yours, and you do not review its item")
    row = TaskComment(task_id=task.id, author_id=user.id, body=text, created_at=utcnow())
    session.add(row)
    session.flush()
    record(session, user.username, "task_comment", "task", task.id, comment_id=row.id, length=len(text))
    return row
