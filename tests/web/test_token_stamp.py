"""Bearer tokens: looked up on every request (revocation and deactivation act at once), but their
``last_used_at`` is written at most once per ``TOKEN_STAMP_INTERVAL_S`` per process, not on every request of
a DICOMweb client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.db.base import utcnow
from pacslabel.settings import Settings
from pacslabel.users import service as user_service
from pacslabel.users.models import ApiToken, User
from pacslabel.web import deps


@pytest.fixture
def sessions(offline_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(offline_settings.effective_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _last_used(sessions: sessionmaker[Session]) -> datetime | None:
    with session_scope(sessions) as session:
        return session.scalars(select(ApiToken.last_used_at)).one()


def test_last_used_is_stamped_once_per_interval_not_per_request(client: TestClient, sessions: sessionmaker[Session],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(sessions) as session:
        user_service.create_user(session, "script1", "annotator")
        token = user_service.create_api_token(session, "script1")
    auth = {"Authorization": f"Bearer {token}"}
    assert _last_used(sessions) is None
    assert client.get("/api/me", headers=auth).status_code == 200
    first = _last_used(sessions)
    assert first is not None
    for _ in range(3):
        assert client.get("/api/me", headers=auth).json()["username"] == "script1"
    assert _last_used(sessions) == first  # no write per request
    monkeypatch.setattr(deps.RECENT_TOKEN_USE, "interval_s", 0.0)
    assert client.get("/api/me", headers=auth).status_code == 200
    later = _last_used(sessions)
    assert later is not None and later > first


def test_a_revoked_token_or_a_deactivated_user_is_refused_at_once(client: TestClient,
                                                                   sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        user_service.create_user(session, "script2", "annotator")
        user_service.create_user(session, "script3", "annotator")
        revoked = user_service.create_api_token(session, "script2")
        deactivated = user_service.create_api_token(session, "script3")
    for token in (revoked, deactivated):
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with session_scope(sessions) as session:
        user = session.scalars(select(User).where(User.username == "script2")).one()
        session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)).one().revoked_at = utcnow()
        session.scalars(select(User).where(User.username == "script3")).one().active = False
    for token in (revoked, deactivated):
        refused = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and refused.json()["detail"] == "invalid or revoked token"
