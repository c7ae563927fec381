"""docker-compose.yml cannot run here (no Docker engine); its shape is checked against the settings class."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pacslabel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_database_orthanc_and_each_pacslabel_process() -> None:
    services = _compose()["services"]
    assert {"postgres", "orthanc", "pacslabel-web", "pacslabel-scp", "pacslabel-worker"} <= set(services)
    assert services["orthanc"]["image"].startswith("orthancteam/orthanc")
    assert "ports" not in services["orthanc"], "Orthanc must only be reachable by pacslabel"
    for name in ("pacslabel-web", "pacslabel-scp", "pacslabel-worker"):
        assert services[name]["build"]["dockerfile"] == "service/Dockerfile"
    assert (ROOT / "service" / "Dockerfile").is_file()


def test_every_pacslabel_variable_in_compose_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    names = set()
    for service in _compose()["services"].values():
        env = service.get("environment") or {}
        names |= {key for key in env if key.startswith("PACSLABEL_")}
    assert names, "compose passes no settings"
    unknown = {name for name in names if name.removeprefix("PACSLABEL_").lower() not in fields}
    assert unknown == set()


def test_published_ports_match_the_settings_defaults() -> None:
    services = _compose()["services"]
    defaults = Settings.model_fields
    assert services["pacslabel-web"]["ports"] == [f"{defaults['web_port'].default}:{defaults['web_port'].default}"]
    scp_port = defaults["scp_port"].default
    assert services["pacslabel-scp"]["ports"] == [f"{scp_port}:{scp_port}"]


def test_orthanc_runs_with_postgresql_index_dicomweb_and_credentials() -> None:
    env = _compose()["services"]["orthanc"]["environment"]
    assert env["ORTHANC__POSTGRESQL__ENABLE_INDEX"] == "true"
    assert env["ORTHANC__DICOM_WEB__ENABLE"] == "true"
    assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
    assert env["ORTHANC__HTTP_COMPRESSION_ENABLED"] == "false"
    assert env["TCP_NODELAY"] == "1"


def test_production_secrets_are_required_not_defaulted() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("PACSLABEL_SESSION_SECRET", "PACSLABEL_PSEUDONYM_KEY", "ORTHANC_PASSWORD", "POSTGRES_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?", text), secret
