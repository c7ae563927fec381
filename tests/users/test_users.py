"""Users, roles, argon2 passwords, hashed API tokens and revocable web sessions (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.errors import BadInput, Conflict, Unauthorized
from pacslabel.users import service
from pacslabel.users.models import ApiToken, User


def test_passwords_are_stored_as_argon2_hashes(db_session: Session) -> None:
    service.create_user(db_session, "reader1", "annotator", "correct horse battery")
    stored = db_session.scalars(select(User)).one()
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2")
    assert "correct horse" not in stored.password_hash
    assert service.authenticate_password(db_session, "reader1", "correct horse battery").id == stored.id


def test_wrong_password_and_unknown_user_get_the_same_answer(db_session: Session) -> None:
    service.create_user(db_session, "reader1", "annotator", "correct horse battery")
    with pytest.raises(Unauthorized) as wrong:
        service.authenticate_password(db_session, "reader1", "wrong password")
    with pytest.raises(Unauthorized) as unknown:
        service.authenticate_password(db_session, "nobody", "wrong password")
    assert wrong.value.message == unknown.value.message


def test_tokens_are_stored_hashed_and_authenticate_their_user(db_session: Session) -> None:
    user = service.create_user(db_session, "mlbot", "ml")
    token = service.create_api_token(db_session, "mlbot", "training")
    row = db_session.scalars(select(ApiToken)).one()
    assert token not in row.token_hash and len(row.token_hash) == 64
    assert service.authenticate_token(db_session, token).id == user.id
    assert row.last_used_at is not None
    with pytest.raises(Unauthorized):
        service.authenticate_token(db_session, token + "x")


def test_logout_revokes_the_web_session(db_session: Session) -> None:
    user = service.create_user(db_session, "reviewer1", "reviewer", "a good password")
    cookie = service.open_web_session(db_session, user, 3600)
    assert service.resolve_web_session(db_session, cookie).id == user.id
    service.close_web_session(db_session, cookie)
    with pytest.raises(Unauthorized):
        service.resolve_web_session(db_session, cookie)


def test_expired_web_session_is_refused(db_session: Session) -> None:
    user = service.create_user(db_session, "reviewer1", "reviewer", "a good password")
    cookie = service.open_web_session(db_session, user, 0)
    with pytest.raises(Unauthorized):
        service.resolve_web_session(db_session, cookie)


@pytest.mark.parametrize(
    ("username", "role", "password", "error"),
    [
        ("reader 1", "annotator", None, BadInput),
        ("reader1", "superuser", None, BadInput),
        ("reader1", "annotator", "short", BadInput),
    ],
)
def test_bad_user_input_is_refused_with_a_reason(db_session: Session, username: str, role: str,
                                                 password: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        service.create_user(db_session, username, role, password)


def test_duplicate_username_is_a_conflict(db_session: Session) -> None:
    service.create_user(db_session, "reader1", "annotator")
    with pytest.raises(Conflict):
        service.create_user(db_session, "reader1", "reviewer")
