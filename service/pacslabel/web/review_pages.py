"""The reviewer's pages: the review queue, a read opened from it, and the approve / reject forms.

The forms call the same workflow functions as the JSON API (`review.workflow.approve` / `reject`, which check
who may review, the task state and the protocol's rejection reasons); nothing here repeats those rules. Like
every page, they answer in HTML through `pages._page` (login redirect, error page with the domain error's
status) and are POST only under the SameSite=Lax session cookie, so another site cannot post them with it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from pacslabel.errors import BadInput, NotFound, PacslabelError
from pacslabel.orthanc.client import OrthancClient
from pacslabel.review import repository as review_repository
from pacslabel.review import workflow
from pacslabel.review.comments import MAX_COMMENT_LENGTH
from pacslabel.review.queue import queue_entries
from pacslabel.tasks import repository as task_repository
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import MAX_ROW_ID, RowId, Text
from pacslabel.web.deps import DbSession
from pacslabel.web.pages import _own_task, _page, _protocol, _reason, _task_page, render, review_read_page

router = APIRouter(include_in_schema=False)

REVIEWERS = (Role.REVIEWER, Role.ADMIN)


def _read_task(session: Session, read_task_id: int) -> Task:
    task = task_repository.get_task(session, read_task_id)
    if task is None or task.purpose != TaskPurpose.READ.value:
        raise NotFound(f"no read task {read_task_id}")
    return task


def _reviewing_task(session: Session, read: Task, user: User) -> Task | None:
    """The user's own review (else arbitration) task on the read's item, whose page shows every read."""
    for purpose in (TaskPurpose.REVIEW, TaskPurpose.ARBITRATION):
        task = review_repository.task_of_reviewer(session, read.item_id, user.id, purpose)
        if task is not None:
            return task
    return None


def _read_url(read: Task, reviewing: Task | None, query: str = "") -> str:
    if reviewing is not None:
        return f"/tasks/{reviewing.id}{query}#read-{read.id}"
    return f"/review/reads/{read.id}{query}#read-{read.id}"


@router.get("/review")
def review_queue(request: Request, session: DbSession, empty: int | None = None) -> Response:
    def build(user: User) -> Response:
        notice = "No read is waiting for your review right now." if empty else None
        return render(request, "review_queue.html", {"entries": queue_entries(session, user), "notice": notice,
                                                     "nav": "review"})
    return _page(request, session, build, REVIEWERS)


@router.post("/review/next")
def next_review(request: Request, session: DbSession) -> Response:
    """The oldest read waiting for this reviewer: on their review page when they hold a review task on its
    item, else opened on its own."""
    def build(user: User) -> Response:
        entries = queue_entries(session, user)
        if not entries:
            return RedirectResponse("/review?empty=1", status_code=303)
        read = _read_task(session, entries[0].task_id)
        return RedirectResponse(_read_url(read, _reviewing_task(session, read, user)), status_code=303)
    return _page(request, session, build, REVIEWERS)


@router.get("/review/reads/{read_task_id}")
def review_read(read_task_id: RowId, request: Request, session: DbSession,
                saved: str | None = None) -> Response:
    def build(user: User) -> Response:
        read = _read_task(session, read_task_id)
        workflow.check_reviewer(session, user, read)  # 403 for a non-reviewer or a reader of the item
        reviewing = _reviewing_task(session, read, user)
        if reviewing is not None:
            return RedirectResponse(_read_url(read, reviewing), status_code=303)
        notice = {"approved": f"Read #{read.id} approved.", "rejected": f"Read #{read.id} returned to its reader.",
                  "comment": "Comment posted."}.get(saved or "")
        return review_read_page(request, session, read, user, notice=notice)
    return _page(request, session, build, REVIEWERS)


def _decide(request: Request, session: Session, read_task_id: int, back: int | None, form: dict[str, str],
            decide: str) -> Response:
    """Run the decision; back to the page it was made on (``back``: the reviewer's review task page, else the
    read's own review page). A domain error re-renders that page with the message and the error's status,
    after the failed decision's writes are rolled back."""
    def page_after(user: User, read: Task, error: str, status_code: int, shown: dict[str, str]) -> Response:
        if back is not None:
            return _task_page(request, session, _own_task(session, back, user), user, error=error,
                              status_code=status_code, form=shown)
        return review_read_page(request, session, read, user, error=error, status_code=status_code, form=shown)

    def build(user: User) -> Response:
        read = _read_task(session, read_task_id)
        if back is not None:
            _own_task(session, back, user)  # the page to go back to must be the reviewer's own
        review_task = review_repository.task_of_reviewer(session, read.item_id, user.id, TaskPurpose.REVIEW)
        try:
            if decide == "approve":
                orthanc: OrthancClient | None = getattr(request.app.state, "orthanc", None)
                workflow.approve(session, review_task, user, read, orthanc=orthanc)
            else:
                choices = _protocol(session, read).get("rejection_reasons") or []
                reason = _reason(form["reason"], "rejection", choices)  # present and short; the workflow checks it
                if len(form["comment"]) > MAX_COMMENT_LENGTH:
                    raise BadInput(f"a rejection comment has at most {MAX_COMMENT_LENGTH} characters, "
                                   f"this one has {len(form['comment'])}")
                workflow.reject(session, review_task, user, read, reason, form["comment"])
        except PacslabelError as exc:
            session.rollback()
            read = _read_task(session, read_task_id)
            shown = {"reject_read": str(read.id), "reject_reason": form.get("reason", ""),
                     "reject_comment": form.get("comment", "")}
            return page_after(user, read, f"Read #{read.id}: {exc.message}", exc.status_code, shown)
        saved = "approved" if decide == "approve" else "rejected"
        if back is not None:
            return RedirectResponse(f"/tasks/{back}?saved={saved}&read={read.id}#read-{read.id}", status_code=303)
        return RedirectResponse(f"/review/reads/{read.id}?saved={saved}#read-{read.id}", status_code=303)
    return _page(request, session, build, REVIEWERS)


@router.post("/review/reads/{read_task_id}/approve")
def approve_form(read_task_id: RowId, request: Request, session: DbSession,
                 back: Annotated[int | None, Form(ge=1, le=MAX_ROW_ID)] = None) -> Response:
    return _decide(request, session, read_task_id, back, {}, "approve")


@router.post("/review/reads/{read_task_id}/reject")
def reject_form(read_task_id: RowId, request: Request, session: DbSession, reason: Annotated[Text, Form()] = "",
                comment: Annotated[Text, Form()] = "",
                back: Annotated[int | None, Form(ge=1, le=MAX_ROW_ID)] = None) -> Response:
    return _decide(request, session, read_task_id, back, {"reason": reason, "comment": comment}, "reject")
