"""The web skeleton: probes, login/logout with a session cookie, bearer tokens, precise 4xx answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from pacslabel.audit.models import AuditEvent
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.settings import Settings
from pacslabel.users import service as user_service
from pacslabel.web.app import create_app
from pacslabel.web.deps import SESSION_COOKIE
from tests.fixtures.database import make_test_settings

PASSWORD = "a long enough password"



def _seed_users(settings: Settings) -> str:
    engine = create_db_engine(settings.effective_database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "reader1", "annotator", PASSWORD)
        user_service.create_user(session, "admin1", "admin", PASSWORD)
        token = user_service.create_api_token(session, "reader1", "script")
    engine.dispose()
    return token


def test_liveness_answers_without_dependencies(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readiness_is_503_when_orthanc_is_unreachable(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "orthanc": "unreachable"}


def test_readiness_is_200_with_database_and_real_orthanc(tmp_path: Path, db_url: str, orthanc) -> None:  # type: ignore[no-untyped-def]
    settings = make_test_settings(tmp_path / "var", database_url=db_url, orthanc_url=orthanc.url,
                                  orthanc_password=orthanc.settings.secret("orthanc_password"))
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "orthanc": "ok"}


def test_login_sets_an_httponly_samesite_cookie_and_logout_revokes_it(client: TestClient,
                                                                     offline_settings: Settings) -> None:
    _seed_users(offline_settings)
    response = client.post("/login", data={"username": "reader1", "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303
    cookie_header = response.headers["set-cookie"].lower()
    assert "httponly" in cookie_header and "samesite=lax" in cookie_header
    assert client.get("/api/me").json()["username"] == "reader1"
    old_cookie = client.cookies.get(SESSION_COOKIE)
    assert client.post("/logout", follow_redirects=False).status_code == 303
    client.cookies.set(SESSION_COOKIE, old_cookie or "")
    assert client.get("/api/me").status_code == 401


def test_wrong_password_gets_401_and_no_cookie(client: TestClient, offline_settings: Settings) -> None:
    _seed_users(offline_settings)
    response = client.post("/api/auth/login", json={"username": "reader1", "password": "nope"})
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong username or password"}
    assert SESSION_COOKIE not in response.cookies


def test_bearer_token_authenticates_api_clients(client: TestClient, offline_settings: Settings) -> None:
    token = _seed_users(offline_settings)
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "annotator"
    refused = client.get("/api/me", headers={"Authorization": "Bearer plk_forged"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


def test_anonymous_api_request_is_refused_and_page_redirects_to_login(client: TestClient) -> None:
    assert client.get("/api/me").status_code == 401
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_malformed_login_body_gets_field_level_422(client: TestClient) -> None:
    response = client.post("/api/auth/login", json={"username": "", "pw": 3})
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"body.username", "body.password"}


def test_logins_are_audited_without_secrets(client: TestClient, offline_settings: Settings) -> None:
    _seed_users(offline_settings)
    client.post("/api/auth/login", json={"username": "reader1", "password": PASSWORD})
    client.post("/api/auth/login", json={"username": "reader1", "password": "wrong"})
    client.post("/login", data={"username": "admin1", "password": "wrong"})
    engine = create_db_engine(offline_settings.effective_database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        rows = [(event.actor, event.action) for event in events]
        details = " ".join(str(event.detail) for event in events)
    engine.dispose()
    assert ("reader1", "login") in rows
    assert (None, "login_failed") in rows
    assert PASSWORD not in details


def test_openapi_page_lists_the_api(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert "/api/me" in spec["paths"] and "/api/auth/login" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_openapi_says_qido_and_metadata_answer_dicom_json(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in ("/dicomweb/studies", "/dicomweb/studies/{study}/series",
                 "/dicomweb/studies/{study}/series/{series}/metadata", "/dicomweb/studies/{study}/metadata"):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == ["application/dicom+json"], path


@pytest.mark.parametrize("text, expected", [("1", 1), ("2147483647", 2147483647), ("2147483648", None), ("0", None),
                                            ("\u00b2", None), ("\u0663", None), ("12a", None), ("", None),
                                            ("99999999999999999999", None)])
def test_a_reference_is_a_row_id_only_when_it_fits_one(text: str, expected: int | None) -> None:
    from pacslabel.web.api_contract import row_id

    assert row_id(text) == expected
