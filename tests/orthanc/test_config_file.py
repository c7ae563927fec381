"""The rendered Orthanc configuration: plain JSON, private, and locked down (no Orthanc needed)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pacslabel.orthanc.config_file import (
    OrthancConfigError,
    default_template_path,
    render_template,
    write_orthanc_config,
)
from tests.fixtures.orthanc import orthanc_test_settings


def test_rendered_config_is_plain_json_readable_only_by_its_owner(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var")
    path = write_orthanc_config(settings)

    assert path == settings.orthanc_dir / "orthanc.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "//" not in text.replace("http://", "")
    config = json.loads(text)
    assert config["RegisteredUsers"] == {"pacslabel": settings.secret("orthanc_password")}
    assert Path(config["StorageDirectory"]).is_dir()
    assert Path(config["IndexDirectory"]).is_dir()
    assert Path(config["StorageDirectory"]).is_relative_to(settings.orthanc_dir.resolve())


def test_rendered_config_holds_the_security_and_performance_settings(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_dicom_aet="RESEARCH", scp_ae_title="PL_SCP")
    config = json.loads(write_orthanc_config(settings).read_text())

    assert config["HttpPort"] == int(settings.orthanc_url.rsplit(":", 1)[1])
    assert config["DicomPort"] == settings.orthanc_dicom_port
    assert config["DicomAet"] == "RESEARCH"
    expected = {
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "HttpCompressionEnabled": False,
        "StorageCompression": False,
        "OverwriteInstances": False,
        "SaveJobs": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "ExecuteLuaEnabled": False,
        "WebDavEnabled": False,
    }
    assert {key: config[key] for key in expected} == expected
    assert config["LimitFindResults"] > 0 and config["LimitFindInstances"] > 0
    assert config["StableAge"] >= 1
    assert config["DicomWeb"]["Enable"] is True
    assert config["DicomWeb"]["Root"] == "/dicom-web/"
    assert config["DicomWeb"]["SeriesMetadata"] == config["DicomWeb"]["StudiesMetadata"] == "Full"
    assert config["Plugins"] == ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]
    modalities = config["DicomModalities"]
    assert list(modalities.values()) == [
        {
            "AET": "PL_SCP",
            "Host": "127.0.0.1",
            "Port": settings.scp_port,
            "AllowEcho": True,
            "AllowStore": True,
            "AllowFind": False,
            "AllowFindWorklist": False,
            "AllowGet": False,
            "AllowMove": False,
            "AllowStorageCommitment": False,
        }
    ]


def test_a_password_with_json_metacharacters_cannot_break_out_of_its_string(tmp_path: Path) -> None:
    password = 'p"w\\d}, "RemoteAccessAllowed": true, "x": "'
    settings = orthanc_test_settings(tmp_path / "var", orthanc_password=password)
    config = json.loads(write_orthanc_config(settings).read_text())

    assert config["RegisteredUsers"] == {"pacslabel": password}
    assert config["RemoteAccessAllowed"] is False


def test_a_placeholder_without_a_value_is_a_clear_error() -> None:
    with pytest.raises(OrthancConfigError, match=r"\$\{MISSING\} has no value"):
        render_template('{"Name": "${MISSING}"}', {})


def test_a_template_that_is_not_json_names_the_line() -> None:
    with pytest.raises(OrthancConfigError, match="line 3"):
        render_template('{\n  // comment\n  "Name": ${NAME}\n  "Other": 1\n}', {"NAME": "x"})


def test_the_compose_template_is_plain_json_after_comment_removal() -> None:
    # It is read by Orthanc itself (which expands ${VAR} from the container environment), so it must be
    # valid Orthanc JSON as it stands.
    path = default_template_path().with_name("orthanc-compose.json.template")
    config = render_template(path.read_text().replace("$", "$$"), {})
    assert config["PostgreSQL"]["EnableIndex"] is True
    assert config["AuthenticationEnabled"] is True
    assert config["HttpCompressionEnabled"] is False
    assert config["RegisteredUsers"] == {"${ORTHANC_USERNAME}": "${ORTHANC_PASSWORD}"}


def test_a_password_that_orthanc_would_expand_is_refused(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_password="abc${HOME}def")
    with pytest.raises(OrthancConfigError, match="PACSLABEL_ORTHANC_PASSWORD must not contain"):
        write_orthanc_config(settings)
