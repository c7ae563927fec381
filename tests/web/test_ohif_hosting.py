"""OHIF is served same-origin under /ohif from a patched copy of the npm dist, with a per-user app-config."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.settings import Settings
from pacslabel.users import service as user_service
from pacslabel.web.app import create_app
from pacslabel.web.ohif_hosting import prepare_ohif_dist
from tests.fixtures.database import make_test_settings

ROOT = Path(__file__).resolve().parents[2]
OHIF_DIST = ROOT / "var" / "ohif" / "current" / "dist"
PASSWORD = "a long enough password"


@pytest.fixture
def app_settings(tmp_path: Path, db_url: str) -> Settings:
    assert (OHIF_DIST / "index.html").is_file(), "scripts/setup.sh installs the OHIF dist"
    settings = make_test_settings(tmp_path / "var", database_url=db_url, ohif_dist_dir=OHIF_DIST)
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        user_service.create_user(session, "reader1", "annotator", PASSWORD)
        user_service.create_user(session, "admin1", "admin", PASSWORD)
    engine.dispose()
    return settings


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def _login(client: TestClient, username: str) -> None:
    assert client.post("/api/auth/login", json={"username": username, "password": PASSWORD}).status_code == 200


def test_patched_dist_loads_every_asset_from_the_ohif_prefix(tmp_path: Path) -> None:
    patched = prepare_ohif_dist(OHIF_DIST, tmp_path)
    html = (patched / "index.html").read_text()
    assert not re.search(r'(src|href)="/(?!ohif/)', html)
    assert "window.PUBLIC_URL = '/ohif/'" in html
    runtimes = [p for p in patched.glob("*.js") if '__webpack_require__.p = "/ohif/";' in p.read_text(errors="ignore")]
    assert len(runtimes) >= 5
    assert not any('__webpack_require__.p = "/";' in p.read_text(errors="ignore") for p in patched.glob("*.js"))
    assert prepare_ohif_dist(OHIF_DIST, tmp_path) == patched  # second call reuses the copy


def test_deep_link_needs_login_then_serves_the_viewer(client: TestClient) -> None:
    link = "/ohif/segmentation?StudyInstanceUIDs=2.25.1"
    anonymous = client.get(link, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    _login(client, "reader1")
    page = client.get(link)
    assert page.status_code == 200 and "/ohif/app-config.js" in page.text


def test_app_config_points_at_the_gateway_and_hides_the_study_list_from_readers(client: TestClient) -> None:
    _login(client, "reader1")
    config = client.get("/ohif/app-config.js").text
    assert "qidoRoot: '/dicomweb'" in config and "wadoRoot: '/dicomweb'" in config
    assert "routerBasename: '/ohif'" in config
    assert "showStudyList: false" in config
    assert "option: 'never'" in config
    _login(client, "admin1")
    assert "showStudyList: true" in client.get("/ohif/app-config.js").text


def test_viewer_assets_are_served_and_unknown_files_are_404(client: TestClient) -> None:
    bundle = next(OHIF_DIST.glob("app.bundle.*.js")).name
    response = client.get(f"/ohif/{bundle}")
    assert response.status_code == 200 and "immutable" in response.headers["cache-control"]
    assert client.get("/ohif/no-such-file.js").status_code == 404
    assert client.get("/ohif/..%2F..%2Fsecrets.json").status_code == 404
