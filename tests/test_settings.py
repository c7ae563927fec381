"""Settings: defaults give a local run, secrets are generated once locally and required in production."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pacslabel.settings import ConfigurationError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PACSLABEL_"):
            monkeypatch.delenv(key)


def test_defaults_give_the_documented_local_ports(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    assert settings.orthanc_url == "http://127.0.0.1:8042"
    assert settings.orthanc_dicom_port == 4242
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8080)
    assert (settings.scp_port, settings.scp_ae_title) == (11112, "PACSLABEL")
    assert settings.effective_database_url == f"sqlite:///{(tmp_path / 'pacslabel.db').resolve()}"


def test_local_secrets_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load_settings(var_dir=tmp_path)
    second = load_settings(var_dir=tmp_path)
    for name in ("session_secret", "pseudonym_key", "orthanc_password"):
        assert len(first.secret(name)) >= 32
        assert first.secret(name) == second.secret(name)
    secrets_file = tmp_path / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert set(json.loads(secrets_file.read_text())) == {"session_secret", "pseudonym_key", "orthanc_password"}


def test_production_refuses_to_start_without_explicit_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(var_dir=tmp_path, env="production")
    assert "PACSLABEL_SESSION_SECRET" in str(error.value)
    assert "PACSLABEL_PSEUDONYM_KEY" in str(error.value)
    assert not (tmp_path / "secrets.json").exists()


def test_production_starts_with_explicit_secrets(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path, env="production", session_secret="a" * 40,
                             pseudonym_key="b" * 40, orthanc_password="c" * 40)
    assert settings.secret("pseudonym_key") == "b" * 40


def test_environment_variables_override_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSLABEL_WEB_PORT", "9090")
    monkeypatch.setenv("PACSLABEL_SCP_ALLOWED_CALLERS", "CT_SCANNER, PACS2")
    monkeypatch.setenv("PACSLABEL_DATABASE_URL", "postgresql://postgres@db/pacslabel")
    settings = load_settings(var_dir=tmp_path)
    assert settings.web_port == 9090
    assert settings.scp_allowed_callers == ["CT_SCANNER", "PACS2"]
    assert settings.effective_database_url == "postgresql+psycopg://postgres@db/pacslabel"


def test_config_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pacslabel.yaml"
    config.write_text("web_port: 8181\nscp_ae_title: LABELS\n")
    monkeypatch.setenv("PACSLABEL_CONFIG_FILE", str(config))
    monkeypatch.setenv("PACSLABEL_WEB_PORT", "8282")
    settings = load_settings(var_dir=tmp_path)
    assert settings.scp_ae_title == "LABELS"
    assert settings.web_port == 8282


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"web_port": 70000}, "PACSLABEL_WEB_PORT"),
        ({"scp_ae_title": "A_TITLE_LONGER_THAN_16"}, "PACSLABEL_SCP_AE_TITLE"),
        ({"orthanc_url": "ftp://x"}, "PACSLABEL_ORTHANC_URL"),
        ({"database_url": "mysql://x"}, "PACSLABEL_DATABASE_URL"),
        ({"no_such_setting": 1}, "PACSLABEL_NO_SUCH_SETTING"),
    ],
)
def test_bad_values_name_the_setting_in_one_line(tmp_path: Path, overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(var_dir=tmp_path, **overrides)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_bad_yaml_config_file_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("web_port: 8181\nscp_ae_title: [unclosed\n")
    monkeypatch.setenv("PACSLABEL_CONFIG_FILE", str(config))
    with pytest.raises(ConfigurationError) as error:
        load_settings(var_dir=tmp_path)
    assert "line" in str(error.value) and "bad.yaml" in str(error.value)


def test_public_dict_masks_secrets_unless_asked(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    masked = settings.public_dict()
    shown = settings.public_dict(show_secrets=True)
    assert masked["orthanc_password"] == "********"
    assert shown["orthanc_password"] == settings.secret("orthanc_password")
    assert masked["orthanc_url"] == "http://127.0.0.1:8042"
