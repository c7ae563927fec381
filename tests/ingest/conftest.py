"""Fixtures for ingest tests: settings on the test database (and the session Orthanc), an in-process SCP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pacslabel.ingest.storage_scp import StorageSCP
from pacslabel.settings import Settings
from tests.fixtures.database import make_test_settings
from tests.fixtures.orthanc import RunningOrthanc, free_port


def ingest_settings(var_dir: Path, db_url: str, orthanc: RunningOrthanc | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": db_url, "scp_port": free_port(), "scp_min_free_bytes": 0,
                              "series_stable_s": 1.0}
    if orthanc is not None:
        values.update(orthanc_url=orthanc.settings.orthanc_url,
                      orthanc_password=orthanc.settings.secret("orthanc_password"),
                      orthanc_dicom_port=orthanc.settings.orthanc_dicom_port, orthanc_timeout_s=5.0)
    values.update(overrides)
    return make_test_settings(var_dir, **values)


@contextmanager
def running_scp(settings: Settings) -> Iterator[StorageSCP]:
    scp = StorageSCP(settings)
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def make_settings(tmp_path: Path, db_url: str) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        return ingest_settings(tmp_path / "var", db_url, **overrides)

    return build
