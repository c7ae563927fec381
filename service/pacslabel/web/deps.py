"""FastAPI dependencies: the request's settings, database session and authenticated user.

Every route authenticates through `current_user` (session cookie for the browser, bearer token for API and
DICOMweb clients); role checks go through `require_roles`, so there is one access door.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from pacslabel.db import session_scope
from pacslabel.errors import Forbidden, Unauthorized
from pacslabel.settings import Settings
from pacslabel.users import repository as user_repository
from pacslabel.users import service as user_service
from pacslabel.users.credentials import hash_token
from pacslabel.users.models import Role, User

SESSION_COOKIE = "pacslabel_session"
# A bearer token's last_used_at is stamped at most this often (per process); see _RecentTokenUse.
TOKEN_STAMP_INTERVAL_S = 60.0


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


class _RecentTokenUse:
    """When each bearer token (by hash) last had its ``last_used_at`` stamped, in this process.

    A DICOMweb client sends hundreds of requests a minute; stamping each one is a row write and a commit
    (an fsync on SQLite) on every request. The token is still looked up on every request, so a revoked
    token or a deactivated user is refused at once; only the stamp is written at most once a minute."""

    def __init__(self, interval_s: float = TOKEN_STAMP_INTERVAL_S, max_entries: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_entries = max_entries
        self._stamped: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, token_hash: str) -> bool:
        with self._lock:
            stamped = self._stamped.get(token_hash)
            return stamped is None or time.monotonic() - stamped >= self.interval_s

    def stamped(self, token_hash: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._stamped) >= self.max_entries:
                self._stamped = {k: t for k, t in self._stamped.items() if now - t < self.interval_s}
            self._stamped[token_hash] = now


RECENT_TOKEN_USE = _RecentTokenUse()


def _token_user(session: Session, token: str) -> User:
    token_hash = hash_token(token)
    if RECENT_TOKEN_USE.due(token_hash):
        user = user_service.authenticate_token(session, token)  # checks, and stamps last_used_at
        RECENT_TOKEN_USE.stamped(token_hash)
        return user
    row = user_repository.find_active_token(session, token_hash)
    user = user_repository.get_user(session, row.user_id) if row else None
    if row is None or user is None or not user.active:
        raise Unauthorized("invalid or revoked token")
    return user


def current_user(request: Request, session: DbSession) -> User:
    token = bearer_token(request)
    if token is not None:
        user = _token_user(session, token)
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
