"""Giving, revoking and listing test-access grants (admins only; every change is audited).

The ``test`` split of a project is sealed for the ML role: only an admin's explicit grant to one user on one
project opens it (``export.released.may_see_test_split``), and revoking closes it again. A user holds at most
one active grant per project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session, aliased

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput, Conflict, Forbidden, NotFound
from pacslabel.export.grant_models import TestAccessGrant
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project
from pacslabel.users import repository as user_repository
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import row_id

MAX_REASON = 255


@dataclass(frozen=True)
class GrantView:
    id: int
    project: str
    username: str
    granted_by: str
    reason: str
    granted_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "project": self.project, "username": self.username, "granted_by": self.granted_by,
                "reason": self.reason, "granted_at": self.granted_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "revoked_by": self.revoked_by, "active": self.revoked_at is None}


def resolve_project(session: Session, project: str | int) -> Project:
    """A project by numeric id or by slug; 404 when there is none."""
    text = str(project).strip()
    number = row_id(text)
    found = (project_repository.get_project(session, number) if number is not None
             else project_repository.get_project_by_slug(session, text))
    if found is None:
        raise NotFound(f"no project {text!r}")
    return found


def _require_admin(actor: User) -> None:
    if actor.role != Role.ADMIN.value:
        raise Forbidden("only admins give, revoke or list test access")


def _target(session: Session, username: str) -> User:
    user = user_repository.get_user_by_name(session, username.strip())
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def _active(session: Session, project_id: int, user_id: int) -> TestAccessGrant | None:
    return session.scalar(select(TestAccessGrant).where(TestAccessGrant.project_id == project_id,
                                                        TestAccessGrant.user_id == user_id,
                                                        TestAccessGrant.revoked_at.is_(None)))


def grant_test_access(session: Session, actor: User, project: str | int, username: str, reason: str
                      ) -> TestAccessGrant:
    """Let ``username`` see the test split of ``project``. 409 when the user already has it."""
    _require_admin(actor)
    reason = (reason or "").strip()
    if not reason:
        raise BadInput("a reason is required: why may this user see the test split?")
    if len(reason) > MAX_REASON:
        raise BadInput(f"the reason is longer than {MAX_REASON} characters")
    target_project = resolve_project(session, project)
    user = _target(session, username)
    if user.role == Role.ADMIN.value:
        raise BadInput(f"{user.username} is an admin and sees the test split already")
    if not user.active:
        raise BadInput(f"{user.username} is deactivated")
    if _active(session, target_project.id, user.id) is not None:
        raise Conflict(f"{user.username} already has test access to {target_project.slug}")
    row = TestAccessGrant(project_id=target_project.id, user_id=user.id, granted_by_id=actor.id, reason=reason,
                          granted_at=utcnow())
    session.add(row)
    session.flush()
    record(session, actor.username, "test_access_grant", "project", target_project.id,
           user=user.username, grant_id=row.id, reason=reason)
    _forget_cached_access(session)
    return row


def revoke_test_access(session: Session, actor: User, project: str | int, username: str) -> TestAccessGrant:
    """Close the test split of ``project`` to ``username`` again. 404 when there is no active grant."""
    _require_admin(actor)
    target_project = resolve_project(session, project)
    user = _target(session, username)
    row = _active(session, target_project.id, user.id)
    if row is None:
        raise NotFound(f"{user.username} has no test access to {target_project.slug}")
    row.revoked_at = utcnow()
    row.revoked_by_id = actor.id
    session.flush()
    record(session, actor.username, "test_access_revoke", "project", target_project.id,
           user=user.username, grant_id=row.id)
    _forget_cached_access(session)
    return row


def list_test_access(session: Session, actor: User, project: str | int | None = None, *,
                     include_revoked: bool = False) -> list[GrantView]:
    """Grants (active ones unless ``include_revoked``), oldest first."""
    _require_admin(actor)
    target, granter, revoker = aliased(User), aliased(User), aliased(User)
    query = (select(TestAccessGrant, Project.slug, target.username, granter.username, revoker.username)
             .join(Project, TestAccessGrant.project_id == Project.id)
             .join(target, TestAccessGrant.user_id == target.id)
             .join(granter, TestAccessGrant.granted_by_id == granter.id)
             .outerjoin(revoker, TestAccessGrant.revoked_by_id == revoker.id)
             .order_by(TestAccessGrant.id))
    if project is not None:
        query = query.where(TestAccessGrant.project_id == resolve_project(session, project).id)
    if not include_revoked:
        query = query.where(TestAccessGrant.revoked_at.is_(None))
    return [GrantView(id=row.id, project=slug, username=name, granted_by=by, reason=row.reason,
                      granted_at=row.granted_at, revoked_at=row.revoked_at, revoked_by=revoked_by)
            for row, slug, name, by, revoked_by in session.execute(query)]


def _forget_cached_access(session: Session) -> None:
    """The gateway keeps per-credential access snapshots for seconds: forget them once the change is
    committed (earlier, a request racing the commit could cache the old answer again)."""
    from pacslabel.dicomweb.routes import invalidate_access

    event.listen(session, "after_commit", lambda _session: invalidate_access(), once=True)
