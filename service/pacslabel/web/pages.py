"""Server-rendered pages (Jinja2, dark theme): the reader's worklist, task page and history, and admin pages.

One access door: every page resolves the user through `current_user` and checks roles here, in `_page`. Pages
answer in HTML (a login redirect, or an error page with the right status), never with the JSON errors of the
API. Readers see only de-identified context; a repeat looks like an ordinary read; another reader's task does
not exist for them (404, so a task id reveals nothing).

Forms are POST only; the session cookie is SameSite=Lax, so another site cannot post them with it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.orm import Session

from pacslabel import __version__
from pacslabel.audit.service import list_events
from pacslabel.errors import BadInput, Forbidden, NotFound, PacslabelError, Unauthorized
from pacslabel.ingest import repository as ingest_repository
from pacslabel.ingest import service as ingest_service
from pacslabel.projects import repository as project_repository
from pacslabel.projects.clinical import reader_context
from pacslabel.projects.service import project_spec, project_summary
from pacslabel.tasks import repository as task_repository
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskStatus
from pacslabel.tasks.views import shown_purpose, visible_to_reader
from pacslabel.users.models import Role, User
from pacslabel.users.repository import list_users
from pacslabel.web.api_contract import MAX_ROW_ID, RowId, Text
from pacslabel.web.deps import DbSession, current_user

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)

OHIF_VIEWER = "/ohif/segmentation"
# Tasks the reader still owes work on (the worklist); everything else is history.
ACTIVE_STATUSES = frozenset({TaskStatus.OPEN.value, TaskStatus.IN_PROGRESS.value, TaskStatus.RETURNED.value})
# Only these states accept submit / skip / exclude from the reader.
ACTIONABLE_STATUSES = frozenset({TaskStatus.IN_PROGRESS.value, TaskStatus.RETURNED.value})
MAX_REASON_LENGTH = 255


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    context = {"version": __version__, "user": getattr(request.state, "user", None), **context}
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


# --- a tiny, safe Markdown subset for protocol instructions ---------------------------------------------------

_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
    (re.compile(r"(?<![\w])_([^_\s][^_]*)_(?![\w])"), r"<em>\1</em>"),
)
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")


def _inline(text: str) -> str:
    # Escape first: every tag in the output is one this function wrote, so protocol text can never inject HTML.
    out = html.escape(text, quote=True)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def render_markdown(text: str) -> Markup:
    """Headings, paragraphs, bullet and numbered lists, **bold**, *emphasis*, `code`; everything else is text.
    No links, images or raw HTML: instructions come from a project file, and a reader's page is no place
    for content that could fetch or run anything."""
    blocks: list[str] = []
    paragraph: list[str] = []
    list_kind: str | None = None
    items: list[str] = []

    def flush_paragraph() -> None:
        if paragraph:
            blocks.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def flush_list() -> None:
        nonlocal list_kind
        if list_kind:
            blocks.append(f"<{list_kind}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_kind}>")
            items.clear()
            list_kind = None

    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        if not line.strip():
            flush_paragraph()
            flush_list()
            continue
        if heading := _HEADING.match(line):
            flush_paragraph()
            flush_list()
            level = len(heading[1]) + 2  # the page already has h1/h2; instructions start at h3
            blocks.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
            continue
        for kind, pattern in (("ul", _BULLET), ("ol", _NUMBERED)):
            if item := pattern.match(line):
                flush_paragraph()
                if list_kind != kind:
                    flush_list()
                    list_kind = kind
                items.append(item[1])
                break
        else:
            if list_kind and raw.startswith((" ", "\t")) and items:
                items[-1] += " " + line.strip()  # continuation of a list item
                continue
            flush_list()
            paragraph.append(line.strip())
    flush_paragraph()
    flush_list()
    return Markup("\n".join(blocks))  # noqa: S704 - built from escaped text only (see _inline)


# --- the one door for pages ---------------------------------------------------------------------------------

def _error_page(request: Request, exc: PacslabelError) -> HTMLResponse:
    titles = {400: "Bad request", 401: "Login required", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    return render(request, "error.html", {"title": titles.get(exc.status_code, "Error"), "message": exc.message,
                                          "status": exc.status_code}, status_code=exc.status_code)


def _page(request: Request, session: Session, build: Callable[[User], Response],
          roles: Sequence[Role] = ()) -> Response:
    """Authenticate (browser: redirect to the login form), check roles, build the page; a domain error
    becomes an error page with its status, and whatever the failed action wrote is rolled back."""
    try:
        user = current_user(request, session)
    except Unauthorized:
        return RedirectResponse("/login", status_code=303)
    try:
        if roles and user.role not in {r.value for r in roles}:
            raise Forbidden(f"this page needs the role {' or '.join(sorted(r.value for r in roles))}")
        return build(user)
    except PacslabelError as exc:
        session.rollback()
        return _error_page(request, exc)


def _own_task(session: Session, task_id: int, user: User, *, act: bool = False) -> Task:
    """The task for its reader (or, to look at, an admin). For everyone else it does not exist: a page must not
    confirm that task ids belong to someone (the API's 403 is for API clients, who know what they asked)."""
    try:
        return task_service.task_for_user(session, task_id, user, act=act)
    except Forbidden:
        if user.role == Role.ADMIN.value:
            raise
        raise NotFound(f"no task {task_id}") from None


def _is_reader(user: User) -> bool:
    return user.role in (Role.ANNOTATOR.value, Role.REVIEWER.value)


# --- what a page shows of a task ----------------------------------------------------------------------------

def _row(session: Session, task: Task, viewer: User) -> dict[str, Any]:
    project = project_repository.get_project(session, task.project_id)
    item = project_repository.get_item(session, task.item_id)
    assert project is not None and item is not None
    row: dict[str, Any] = {
        "id": task.id,
        "project": project.name,
        "project_slug": project.slug,
        "purpose": shown_purpose(task, viewer),
        "status": task.status,
        "claimed_at": task.claimed_at,
        "submitted_at": task.submitted_at,
        "finished_at": task.finished_at,
        "skip_reason": task.skip_reason,
        "exclusion_reason": task.exclusion_reason,
        "context": reader_context(session, project, item),
        "study_uid": task_repository.study_uid(session, item.study_id),
    }
    if viewer.role == Role.ADMIN.value:
        reader = session.get(User, task.reader_id)
        row.update({"reader": reader.username if reader else None, "split": item.split, "stage": item.stage})
    return row


_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def swatch_color(color: Any) -> str | None:
    """A protocol label colour ({"hex": "#rrggbb"} or {"cielab": [L, a, b]}) as a CSS hex colour; None when
    unreadable. Only a validated "#rrggbb" ever reaches the style attribute."""
    if not isinstance(color, dict):
        return None
    if isinstance(color.get("hex"), str) and _HEX.fullmatch(color["hex"]):
        return str(color["hex"]).lower()
    lab = color.get("cielab")
    if not (isinstance(lab, list | tuple) and len(lab) == 3):
        return None
    lightness, a, b = (float(v) for v in lab)
    # CIELab (D65) -> XYZ -> linear sRGB -> gamma-encoded sRGB.
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(t: float) -> float:
        return t ** 3 if t ** 3 > 0.008856 else (t - 16 / 116) / 7.787

    x, y, z = 0.95047 * finv(fx), 1.0 * finv(fy), 1.08883 * finv(fz)
    linear = (3.2406 * x - 1.5372 * y - 0.4986 * z, -0.9689 * x + 1.8758 * y + 0.0415 * z,
              0.0557 * x - 0.2040 * y + 1.0570 * z)
    channels = [1.055 * c ** (1 / 2.4) - 0.055 if c > 0.0031308 else 12.92 * c for c in (max(0.0, v) for v in linear)]
    return "#" + "".join(f"{round(min(1.0, c) * 255):02x}" for c in channels)


def _protocol(session: Session, task: Task) -> dict[str, Any]:
    # The protocol the task is read under (tasks keep their version), not necessarily the newest.
    version = project_repository.protocol_version(session, task.project_id, task.protocol_version)
    if version is not None:
        return dict(version.protocol)
    project = project_repository.get_project(session, task.project_id)
    assert project is not None
    return project_spec(project).protocol.model_dump()


def _annotation_versions(session: Session, task: Task) -> list[dict[str, Any]] | None:
    """The task's saved SEG/SR versions; None while the annotations room is not installed."""
    try:
        from pacslabel.annotations.service import list_versions
    except ImportError:
        return None
    return list_versions(session, task)


def _review_context(request: Request, session: Session, task: Task, user: User) -> dict[str, Any]:
    """The review side of a task page: the task's comment thread, the reviewers' decisions and fixes on it
    (what changed, per label) and, when it was sent back, the rejection to show first; on a review /
    arbitration page each read of the item (viewer link, versions, decisions, thread, the reviewer's
    approve / reject forms) and what became of the item."""
    from pacslabel.review import comments, fix_changes
    from pacslabel.review import repository as review_repository
    from pacslabel.review.queue import item_outcome

    orthanc = getattr(request.app.state, "orthanc", None)
    context: dict[str, Any] = {"comments": comments.thread(session, task), "decisions": [], "fixes": [],
                               "read_threads": [], "returned": None, "outcome": None}
    if task.purpose in ("read", "repeat"):
        context["decisions"] = review_repository.decisions_of_task(session, task.id)
        if task.status == TaskStatus.RETURNED.value:
            context["returned"] = next((d for d in reversed(context["decisions"]) if d.decision == "reject"), None)
        try:
            context["fixes"] = fix_changes.fixes_of_task(session, orthanc, task)
        except PacslabelError as exc:  # Orthanc away: the page still shows, the diff says why it is missing
            context["fixes_error"] = exc.message
    elif task.purpose in comments.REVIEWING_PURPOSES:
        # The page's reviewer (or an admin) decides; anyone else looking (nobody, today) would only read.
        decides = task.reader_id == user.id or user.role == Role.ADMIN.value
        context["read_threads"] = [read_review_entry(session, read, user, decides=decides)
                                   for read in review_repository.slot_reads(session, task.item_id)]
        context["outcome"] = item_outcome(session, task.item_id)
    return context


def _may_decide(session: Session, user: User, read: Task) -> bool:
    """The workflow's own check (reviewer of the project or admin, not a reader of the item), asked before the
    forms are shown so that a page never offers what the workflow would refuse."""
    from pacslabel.review.workflow import check_reviewer

    if read.status != TaskStatus.SUBMITTED.value:
        return False
    try:
        check_reviewer(session, user, read)
    except PacslabelError:
        return False
    return True


def read_review_entry(session: Session, read: Task, user: User, *, decides: bool) -> dict[str, Any]:
    """One read as a reviewer sees it on a review page."""
    from pacslabel.review import comments
    from pacslabel.review import repository as review_repository

    reader = session.get(User, read.reader_id)
    return {"task_id": read.id, "status": read.status, "reader": reader.username if reader else None,
            "submitted_at": read.submitted_at, "note": read.note, "exclusion_reason": read.exclusion_reason,
            "comments": comments.thread(session, read), "viewer_url": read_viewer_url(session, read),
            "versions": _annotation_versions(session, read),
            "decisions": review_repository.decisions_of_task(session, read.id),
            "may_comment": comments.may_follow(session, user, read),
            "may_decide": decides and _may_decide(session, user, read),
            "rejection_reasons": _protocol(session, read).get("rejection_reasons") or []}


def read_viewer_url(session: Session, read: Task) -> str | None:
    """OHIF on one read under review: the item's source series and that read's own SEG series only, so the
    reviewer sees this reader's latest version (OHIF shows the last instance of a SEG series) and no other
    reader's. A save after editing the loaded SEG keeps the read's series and names the loaded version as
    its predecessor, which is how the gateway attributes the fix to this read (annotations.service.fix_target).
    None when the read's study is unknown; without recorded source series the whole study is opened."""
    from pacslabel.annotations.models import AnnotationModality, task_series_uid

    item = project_repository.get_item(session, read.item_id)
    study_uid = task_repository.study_uid(session, item.study_id) if item is not None else None
    if item is None or not study_uid:
        return None
    url = f"{OHIF_VIEWER}?StudyInstanceUIDs={study_uid}"
    if item.series_uids:
        series = [*item.series_uids, task_series_uid(study_uid, read.id, AnnotationModality.SEG)]
        url += "&SeriesInstanceUIDs=" + ",".join(series)
    return url


def _task_page(request: Request, session: Session, task: Task, user: User, *, error: str | None = None,
               notice: str | None = None, status_code: int = 200, form: dict[str, str] | None = None
               ) -> HTMLResponse:
    protocol = _protocol(session, task)
    row = _row(session, task, user)
    viewer_url = f"{OHIF_VIEWER}?StudyInstanceUIDs={row['study_uid']}" if row["study_uid"] else None
    own = task.status in ACTIONABLE_STATUSES and task.reader_id == user.id
    return render(request, "task.html", {
        "task": row,
        # What the page is for: a reader's read, a review, an arbitration; the actions follow from it.
        "mode": task.purpose if task.purpose in ("review", "arbitration") else "read",
        "note": task.note,
        "instructions": render_markdown(protocol.get("instructions") or ""),
        "segments": [dict(s, swatch=swatch_color(s.get("color"))) for s in protocol.get("segments") or []],
        "skip_reasons": protocol.get("skip_reasons") or [],
        "exclusion_reasons": protocol.get("exclusion_reasons") or [],
        "viewer_url": viewer_url,
        # Reader-only actions (submit / skip / exclude / note) are for reads; a review is decided per read,
        # an arbitration is submitted with its own button.
        "actionable": own and task.purpose in ("read", "repeat"),
        "arbitrable": own and task.purpose == "arbitration",
        # An open task assigned to this user (an arbitration, an admin's assignment) is started from its page.
        "startable": task.status == TaskStatus.OPEN.value and task.reader_id == user.id,
        "versions": _annotation_versions(session, task),
        "error": error,
        "notice": notice,
        "form": form or {},
        "nav": "review" if task.purpose in ("review", "arbitration") else None,
        **_review_context(request, session, task, user),
    }, status_code=status_code)


def review_read_page(request: Request, session: Session, read: Task, user: User, *, error: str | None = None,
                     notice: str | None = None, status_code: int = 200, form: dict[str, str] | None = None
                     ) -> HTMLResponse:
    """A read reviewed from the queue by a reviewer who holds no review task on its item: the read's context,
    versions, decisions, thread and the approve / reject forms, nothing of the reader's actions."""
    from pacslabel.review.queue import item_outcome

    protocol = _protocol(session, read)
    row = _row(session, read, user)
    return render(request, "task.html", {
        "task": row, "mode": "read_review", "note": read.note,
        "instructions": render_markdown(protocol.get("instructions") or ""),
        "segments": [dict(s, swatch=swatch_color(s.get("color"))) for s in protocol.get("segments") or []],
        "viewer_url": None, "actionable": False, "arbitrable": False, "startable": False, "versions": None,
        "comments": [], "decisions": [], "fixes": [], "returned": None,
        "read_threads": [read_review_entry(session, read, user, decides=True)],
        "outcome": item_outcome(session, read.item_id),
        "error": error, "notice": notice, "form": form or {}, "nav": "review",
    }, status_code=status_code)


# --- reader pages -------------------------------------------------------------------------------------------

@router.get("/")
def home(request: Request, session: DbSession, done: int | None = None, empty: int | None = None) -> Response:
    def build(user: User) -> Response:
        tasks = [t for t in task_repository.tasks_of_reader(session, user.id, limit=200)
                 if visible_to_reader(t) and t.status in ACTIVE_STATUSES]
        notice = None
        finished = task_repository.get_task(session, done) if done is not None else None
        if finished is not None and finished.reader_id == user.id:
            notice = f"Task {finished.id} {finished.status.replace('_', ' ')}."
        if empty:
            notice = "No task is waiting for you right now."
        return render(request, "worklist.html", {"tasks": [_row(session, t, user) for t in tasks],
                                                 "notice": notice, "can_read": _is_reader(user)})
    return _page(request, session, build)


@router.get("/history")
def history(request: Request, session: DbSession) -> Response:
    def build(user: User) -> Response:
        tasks = [t for t in task_repository.tasks_of_reader(session, user.id, limit=500)
                 if visible_to_reader(t) and t.status not in ACTIVE_STATUSES]
        return render(request, "history.html", {"tasks": [_row(session, t, user) for t in tasks]})
    return _page(request, session, build)


@router.post("/next")
def next_task(request: Request, session: DbSession) -> Response:
    def build(user: User) -> Response:
        task = task_service.claim_next_task(session, user)
        if task is None:
            return RedirectResponse("/?empty=1", status_code=303)
        return RedirectResponse(f"/tasks/{task.id}", status_code=303)
    return _page(request, session, build)


@router.get("/tasks/{task_id}")
def task_page(task_id: RowId, request: Request, session: DbSession, saved: str | None = None,
              read: int | None = None) -> Response:
    def build(user: User) -> Response:
        notice = {"note": "Note saved for the reviewer.", "comment": "Comment posted.",
                  "approved": f"Read #{read} approved.", "rejected": f"Read #{read} returned to its reader.",
                  }.get(saved or "")
        return _task_page(request, session, _own_task(session, task_id, user), user, notice=notice)
    return _page(request, session, build)


def _act(request: Request, session: Session, task_id: int, form: dict[str, str],
         action: Callable[[Task, User], str]) -> Response:
    """Run a reader's action on their task; on a domain error re-render the task page with the message and the
    error's status (the failed action's writes are rolled back first)."""
    def build(user: User) -> Response:
        task = _own_task(session, task_id, user, act=True)
        try:
            return RedirectResponse(action(task, user), status_code=303)
        except PacslabelError as exc:
            session.rollback()
            task = _own_task(session, task_id, user, act=True)
            return _task_page(request, session, task, user, error=exc.message, status_code=exc.status_code,
                              form=form)
    return _page(request, session, build)


def _reason(value: str, what: str, choices: Sequence[str]) -> str:
    value = value.strip()
    if not value:
        raise BadInput(f"choose a {what} reason ({', '.join(choices)})")
    if len(value) > MAX_REASON_LENGTH:
        raise BadInput(f"a {what} reason has at most {MAX_REASON_LENGTH} characters")
    return value


@router.post("/tasks/{task_id}/start")
def start_form(task_id: RowId, request: Request, session: DbSession) -> Response:
    def action(task: Task, user: User) -> str:
        task_service.start_task(session, task, user)
        return f"/tasks/{task.id}"
    return _act(request, session, task_id, {}, action)


@router.post("/tasks/{task_id}/submit")
def submit_form(task_id: RowId, request: Request, session: DbSession) -> Response:
    def action(task: Task, user: User) -> str:
        if task.purpose == "arbitration":  # the arbiter's SEG becomes the item's final label
            from pacslabel.review.workflow import finish_arbitration

            finish_arbitration(session, task, user)
        else:
            task_service.submit_task(session, task, user)
        return f"/?done={task.id}"
    return _act(request, session, task_id, {}, action)


@router.post("/tasks/{task_id}/skip")
def skip_form(task_id: RowId, request: Request, session: DbSession,
              reason: Annotated[Text, Form()] = "") -> Response:
    def action(task: Task, user: User) -> str:
        choices = _protocol(session, task).get("skip_reasons") or []
        task_service.skip_task(session, task, user, _reason(reason, "skip", choices))
        return f"/?done={task.id}"
    return _act(request, session, task_id, {"skip_reason": reason}, action)


@router.post("/tasks/{task_id}/exclude")
def exclude_form(task_id: RowId, request: Request, session: DbSession,
                 reason: Annotated[Text, Form()] = "", note: Annotated[Text, Form()] = "") -> Response:
    def action(task: Task, user: User) -> str:
        choices = _protocol(session, task).get("exclusion_reasons") or []
        task_service.exclude_task(session, task, user, _reason(reason, "exclusion", choices), note.strip() or None)
        return f"/?done={task.id}"
    return _act(request, session, task_id, {"exclusion_reason": reason, "exclusion_note": note}, action)


@router.post("/tasks/{task_id}/note")
def note_form(task_id: RowId, request: Request, session: DbSession,
              text: Annotated[Text, Form()] = "") -> Response:
    def action(task: Task, user: User) -> str:
        task_service.leave_note(session, task, user, text)
        return f"/tasks/{task.id}?saved=note"
    return _act(request, session, task_id, {"note": text}, action)


@router.post("/tasks/{task_id}/comments")
def comment_form(task_id: RowId, request: Request, session: DbSession, body: Annotated[Text, Form()] = "",
                 back: Annotated[int | None, Form(ge=1, le=MAX_ROW_ID)] = None,
                 from_queue: Annotated[bool, Form()] = False
                 ) -> Response:
    """A comment on a task's thread from its reader, a reviewer of its item (from their review page: ``back``
    is that page's task; from a read opened in the review queue: ``from_queue``) or an admin."""
    from pacslabel.review import comments

    def build(user: User) -> Response:
        task = comments.followed_task(session, task_id, user)
        page = back if back is not None else task.id
        try:
            comments.post_comment(session, task, user, body)
        except PacslabelError as exc:
            session.rollback()
            if from_queue:
                return review_read_page(request, session, task, user, error=exc.message,
                                        status_code=exc.status_code, form={"comment": body})
            return _task_page(request, session, _own_task(session, page, user), user, error=exc.message,
                              status_code=exc.status_code, form={"comment": body})
        if from_queue:
            return RedirectResponse(f"/review/reads/{task.id}?saved=comment#thread-{task.id}", status_code=303)
        return RedirectResponse(f"/tasks/{page}?saved=comment#comments", status_code=303)
    return _page(request, session, build)


# --- admin pages --------------------------------------------------------------------------------------------

ADMIN = (Role.ADMIN,)


@router.get("/admin/projects")
def admin_projects(request: Request, session: DbSession) -> Response:
    def build(user: User) -> Response:
        projects = [project_summary(session, p) for p in project_repository.list_projects(session)]
        return render(request, "admin_projects.html", {"projects": projects})
    return _page(request, session, build, ADMIN)


@router.get("/admin/users")
def admin_users(request: Request, session: DbSession) -> Response:
    def build(user: User) -> Response:
        return render(request, "admin_users.html", {"users": list_users(session)})
    return _page(request, session, build, ADMIN)


def _ingest_page(request: Request, session: Session, *, error: str | None = None, notice: str | None = None,
                 status_code: int = 200) -> HTMLResponse:
    return render(request, "admin_ingest.html", {
        "status": ingest_service.status_report(session),
        "quarantine": ingest_repository.quarantine_list(session, include_resolved=True, limit=200),
        "error": error, "notice": notice}, status_code=status_code)


@router.get("/admin/ingest")
def admin_ingest(request: Request, session: DbSession, done: str | None = None) -> Response:
    notices = {"released": "Released: the instance is back in the ingest queue.",
               "deleted": "Deleted: the quarantined file is gone; the record stays."}
    return _page(request, session, lambda user: _ingest_page(request, session, notice=notices.get(done or "")),
                 ADMIN)


def _quarantine_action(request: Request, session: Session, quarantine_id: int, what: str) -> Response:
    def build(user: User) -> Response:
        settings = request.app.state.settings
        try:
            if what == "release":
                ingest_service.release(session, settings, quarantine_id, actor=user.username)
            else:
                ingest_service.delete(session, settings, quarantine_id, actor=user.username)
        except PacslabelError as exc:
            session.rollback()
            return _ingest_page(request, session, error=exc.message, status_code=exc.status_code)
        return RedirectResponse(f"/admin/ingest?done={what}d", status_code=303)
    return _page(request, session, build, ADMIN)


@router.post("/admin/ingest/quarantine/{quarantine_id}/release")
def quarantine_release(quarantine_id: RowId, request: Request, session: DbSession) -> Response:
    return _quarantine_action(request, session, quarantine_id, "release")


@router.post("/admin/ingest/quarantine/{quarantine_id}/delete")
def quarantine_delete(quarantine_id: RowId, request: Request, session: DbSession) -> Response:
    return _quarantine_action(request, session, quarantine_id, "delete")


@router.get("/admin/audit")
def admin_audit(request: Request, session: DbSession) -> Response:
    def build(user: User) -> Response:
        return render(request, "admin_audit.html", {"events": list_events(session, limit=200)})
    return _page(request, session, build, ADMIN)
