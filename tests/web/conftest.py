"""Web tests: the app with the test database and no Orthanc behind it (enough for everything but /readyz)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pacslabel.settings import Settings
from pacslabel.web.app import create_app
from tests.fixtures.database import offline_test_settings


@pytest.fixture
def offline_settings(tmp_path: Path, db_url: str) -> Settings:
    return offline_test_settings(tmp_path / "var", db_url)


@pytest.fixture
def client(offline_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(offline_settings)) as test_client:
        yield test_client
