"""OrthancProcess and check_external_orthanc: start, stop, refuse to start, check a site's Orthanc."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pacslabel.orthanc.client import OrthancClient, OrthancUnavailable
from pacslabel.orthanc.supervisor import (
    OrthancProcess,
    OrthancStartError,
    check_external_orthanc,
    port_in_use,
)
from tests.fixtures.orthanc import RunningOrthanc, free_port, orthanc_test_settings

pytestmark = pytest.mark.orthanc


def _pid_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_stop_ends_orthanc_cleanly_and_frees_both_ports(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var")
    http_port = int(settings.orthanc_url.rsplit(":", 1)[1])
    # A stale pid file naming some other process (here: pytest itself) must be left alone.
    settings.orthanc_dir.mkdir(parents=True)
    (settings.orthanc_dir / "orthanc.pid").write_text(f"{os.getpid()}\n")
    with OrthancProcess(settings, grace_period_s=10) as process:
        pid = process.pid
        assert pid is not None and process.is_running()
        assert process.wait(timeout=0.1) is None  # still running
        with OrthancClient.from_settings(settings) as client:
            assert client.system()["HttpPort"] == http_port
        assert (settings.orthanc_dir / "orthanc.pid").read_text().strip() == str(pid)
        assert port_in_use(http_port) and port_in_use(settings.orthanc_dicom_port)

    assert not process.is_running()
    assert not _pid_exists(pid)
    assert not port_in_use(http_port)
    assert not port_in_use(settings.orthanc_dicom_port)
    assert not (settings.orthanc_dir / "orthanc.pid").exists()
    log = (settings.orthanc_dir / "orthanc.log").read_text()
    assert "Orthanc has stopped" in log  # SIGTERM ran Orthanc's own shutdown, no SIGKILL needed
    process.stop()  # a second stop is harmless


def test_orthanc_runs_with_nagle_off_small_arenas_and_none_of_our_secrets(
    orthanc: RunningOrthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = orthanc.process.pid
    assert pid is not None
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        if "=" in item
    )
    assert environ["TCP_NODELAY"] == "1"
    assert environ["MALLOC_ARENA_MAX"] == "5"
    assert not [key for key in environ if key.startswith("PACSLABEL_")]
    config = orthanc.settings.orthanc_dir / "orthanc.json"
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [
        orthanc.settings.orthanc_executable.encode(),
        str(config).encode(),
    ]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_start_fails_with_one_clear_line_when_the_http_port_is_taken(
    orthanc: RunningOrthanc, tmp_path: Path
) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_url=orthanc.url)

    with pytest.raises(OrthancStartError) as caught:
        OrthancProcess(settings).start()

    message = caught.value.message
    assert message == (
        f"cannot start Orthanc: its HTTP port {orthanc.http_port} is already in use by another process "
        "(another Orthanc?); stop it or choose another port with PACSLABEL_ORTHANC_URL"
    )
    assert not (settings.orthanc_dir / "orthanc.pid").exists()


def test_start_fails_with_one_clear_line_when_the_dicom_port_is_taken(
    orthanc: RunningOrthanc, tmp_path: Path
) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_dicom_port=orthanc.dicom_port)

    with pytest.raises(OrthancStartError, match=rf"DICOM port {orthanc.dicom_port} is already in use") as caught:
        OrthancProcess(settings).start()
    assert "\n" not in caught.value.message


def test_start_fails_clearly_when_the_executable_is_missing(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_executable=str(tmp_path / "no-orthanc"))

    with pytest.raises(OrthancStartError, match=r"no-orthanc is not an executable file \(install") as caught:
        OrthancProcess(settings).start()
    assert "\n" not in caught.value.message


def test_start_refuses_a_non_loopback_url_for_the_managed_orthanc(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var", orthanc_url="http://192.0.2.10:8042")
    with pytest.raises(OrthancStartError, match="must point at loopback"):
        OrthancProcess(settings).start()


def test_an_orthanc_that_dies_during_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "Orthanc"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "W0101 00:00:00.000000 main.cpp:1] Orthanc is starting"\n'
        'echo "E0101 00:00:00.000001 main.cpp:2] Something precise went wrong" >&2\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    settings = orthanc_test_settings(tmp_path / "var", orthanc_executable=str(fake))

    with pytest.raises(OrthancStartError) as caught:
        OrthancProcess(settings).start()

    first_line, *rest = caught.value.message.splitlines()
    assert first_line == "Orthanc exited during start-up with code 3: Something precise went wrong"
    assert any("Orthanc is starting" in line for line in rest)
    assert not (settings.orthanc_dir / "orthanc.pid").exists()


def test_a_restart_after_a_crash_replaces_the_orphaned_orthanc(tmp_path: Path) -> None:
    settings = orthanc_test_settings(tmp_path / "var")
    crashed = OrthancProcess(settings, grace_period_s=10).start()
    orphan_pid = crashed.pid
    assert orphan_pid is not None
    try:
        # As if pacslabel had been killed with -9: the pid file stays, the child keeps running.
        with OrthancProcess(settings, grace_period_s=10) as restarted:
            assert restarted.pid != orphan_pid
            assert crashed.returncode is not None  # the orphan was stopped
            with OrthancClient.from_settings(settings) as client:
                assert client.is_alive()
    finally:
        crashed.stop()


def test_check_external_orthanc_passes_with_the_right_credentials(orthanc: RunningOrthanc, tmp_path: Path) -> None:
    settings = orthanc_test_settings(
        tmp_path / "var",
        orthanc_managed=False,
        orthanc_url=orthanc.url,
        orthanc_password=orthanc.settings.secret("orthanc_password"),
    )

    assert check_external_orthanc(settings)["Version"] == "1.10.1"
    with OrthancProcess(settings) as process:  # unmanaged: checks, starts nothing
        assert process.pid is None
    assert orthanc.client.is_alive()


def test_check_external_orthanc_fails_with_one_line_for_a_wrong_password(
    orthanc: RunningOrthanc, tmp_path: Path
) -> None:
    settings = orthanc_test_settings(
        tmp_path / "var", orthanc_managed=False, orthanc_url=orthanc.url, orthanc_password="wrong"
    )

    with pytest.raises(OrthancUnavailable) as caught:
        check_external_orthanc(settings)

    assert caught.value.message == (
        f"Orthanc at {orthanc.url} refused the credentials of user 'pacslabel' (401 on GET /system)"
    )
    with pytest.raises(OrthancUnavailable):
        OrthancProcess(settings).start()


def test_check_external_orthanc_fails_with_one_line_when_nothing_listens(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = orthanc_test_settings(tmp_path / "var", orthanc_managed=False, orthanc_url=url)

    with pytest.raises(OrthancUnavailable, match=rf"^Orthanc at {url} is unreachable") as caught:
        check_external_orthanc(settings)
    assert "\n" not in caught.value.message


def test_check_external_orthanc_fails_when_the_dicomweb_root_is_wrong(
    orthanc: RunningOrthanc, tmp_path: Path
) -> None:
    settings = orthanc_test_settings(
        tmp_path / "var",
        orthanc_managed=False,
        orthanc_url=orthanc.url,
        orthanc_password=orthanc.settings.secret("orthanc_password"),
        orthanc_dicomweb_root="/not-dicom-web/",
    )
    with pytest.raises(OrthancUnavailable, match="DICOMweb plugin .* does not answer: .*404") as caught:
        check_external_orthanc(settings)
    assert "\n" not in caught.value.message
