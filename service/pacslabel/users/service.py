"""User management and authentication: the rules, over the repository's queries."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy.orm import Session

from pacslabel.db.base import utcnow
from pacslabel.errors import BadInput, Conflict, NotFound, Unauthorized
from pacslabel.users import repository
from pacslabel.users.credentials import hash_password, hash_token, new_token, verify_password
from pacslabel.users.models import ApiToken, Role, User, WebSession

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD_LENGTH = 8


def create_user(session: Session, username: str, role: str, password: str | None = None,
                display_name: str | None = None) -> User:
    if not USERNAME_PATTERN.match(username):
        raise BadInput("username must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    try:
        role_value = Role(role)
    except ValueError:
        raise BadInput(f"role must be one of {', '.join(r.value for r in Role)}") from None
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if repository.get_user_by_name(session, username):
        raise Conflict(f"user {username!r} exists already")
    user = User(username=username, role=role_value.value, display_name=display_name,
                password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = repository.get_user_by_name(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    user.password_hash = hash_password(password)


def authenticate_password(session: Session, username: str, password: str) -> User:
    user = repository.get_user_by_name(session, username)
    # Same message for unknown user and wrong password: no account enumeration.
    if user is None or not user.active or not verify_password(user.password_hash, password):
        raise Unauthorized("wrong username or password")
    return user


def create_api_token(session: Session, username: str, name: str = "cli") -> str:
    user = repository.get_user_by_name(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    token = new_token()
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    session.flush()
    return token


def authenticate_token(session: Session, token: str) -> User:
    row = repository.find_active_token(session, hash_token(token))
    user = repository.get_user(session, row.user_id) if row else None
    if row is None or user is None or not user.active:
        raise Unauthorized("invalid or revoked token")
    row.last_used_at = utcnow()
    return user


def open_web_session(session: Session, user: User, max_age_s: int) -> str:
    token = new_token(prefix="pls_")
    session.add(WebSession(user_id=user.id, token_hash=hash_token(token),
                           expires_at=utcnow() + timedelta(seconds=max_age_s)))
    session.flush()
    return token


def resolve_web_session(session: Session, token: str) -> User:
    row = repository.find_live_session(session, hash_token(token), utcnow())
    user = repository.get_user(session, row.user_id) if row else None
    if row is None or user is None or not user.active:
        raise Unauthorized("session expired; log in again")
    return user


def close_web_session(session: Session, token: str) -> None:
    row = repository.find_live_session(session, hash_token(token), utcnow())
    if row is not None:
        row.revoked_at = utcnow()
