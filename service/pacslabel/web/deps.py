"""FastAPI dependencies: the request's settings, database session and authenticated user.

Every route authenticates through `current_user` (session cookie for the browser, bearer token for API and
DICOMweb clients); role checks go through `require_roles`, so there is one access door.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from pacslabel.db import session_scope
from pacslabel.errors import Forbidden, Unauthorized
from pacslabel.settings import Settings
from pacslabel.users import service as user_service
from pacslabel.users.models import Role, User

SESSION_COOKIE = "pacslabel_session"


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_db_session(request: Request) -> Iterator[Session]:
    """One session per request; the request owns the transaction (commit on success, roll back on error)."""
    with session_scope(request.app.state.sessionmaker) as session:
        yield session


AppSettings = Annotated[Settings, Depends(get_app_settings)]
DbSession = Annotated[Session, Depends(get_db_session)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_user(request: Request, session: DbSession) -> User:
    token = bearer_token(request)
    if token is not None:
        user = user_service.authenticate_token(session, token)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise Unauthorized("login required")
        user = user_service.resolve_web_session(session, cookie)
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    allowed = {role.value for role in roles}

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise Forbidden(f"this needs the role {' or '.join(sorted(allowed))}")
        return user

    return check


require_admin = require_roles(Role.ADMIN)
AdminUser = Annotated[User, Depends(require_admin)]
