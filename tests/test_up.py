"""`pacslabel up --demo`, the shape of `make run`: real Orthanc, web, SCP and a worker as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_starts_everything_and_demo_studies_arrive_through_the_scp(tmp_path: Path) -> None:
    web_port, orthanc_port, dicom_port, scp_port = (_free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSLABEL_")}
    env.update({
        "PACSLABEL_VAR_DIR": str(tmp_path / "var"),
        "PACSLABEL_WEB_PORT": str(web_port),
        "PACSLABEL_ORTHANC_URL": f"http://127.0.0.1:{orthanc_port}",
        "PACSLABEL_ORTHANC_DICOM_PORT": str(dicom_port),
        "PACSLABEL_SCP_PORT": str(scp_port),
        "PACSLABEL_LOG_FORMAT": "text",
        "PACSLABEL_SERIES_STABLE_S": "1",
    })
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "pacslabel.cli", "up", "--demo", "--demo-scale", "small",
                                "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    web = f"http://127.0.0.1:{web_port}"
    orthanc = f"http://127.0.0.1:{orthanc_port}"
    try:
        _wait_for(lambda: httpx.get(f"{web}/readyz").status_code == 200, 90, "/readyz")
        assert httpx.get(f"{web}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{orthanc}/system").status_code == 401, "Orthanc must require credentials"
        secrets = json.loads((tmp_path / "var" / "secrets.json").read_text())
        auth = ("pacslabel", secrets["orthanc_password"])
        manifest = tmp_path / "var" / "demo" / "studies" / "manifest.json"
        _wait_for(manifest.exists, 60, "the demo studies")
        expected = len(json.loads(manifest.read_text())["files"])

        def all_arrived() -> bool:
            stats = httpx.get(f"{orthanc}/statistics", auth=auth).json()
            return int(stats["CountInstances"]) >= expected

        _wait_for(all_arrived, 180, f"{expected} demo instances in Orthanc")
        assert int(httpx.get(f"{orthanc}/statistics", auth=auth).json()["CountInstances"]) == expected
        reader = httpx.Client(base_url=web)
        login = reader.post("/api/auth/login", json={"username": "reader1", "password": "pacslabel-demo"})
        assert login.status_code == 200
        claimed: list[dict] = []  # type: ignore[type-arg]

        def reader_gets_a_task() -> bool:
            task = reader.post("/api/tasks/next").json()["task"]
            if task:
                claimed.append(task)
            return task is not None

        # The demo project is applied once ingest drains, so a reader can press Next at once.
        _wait_for(reader_gets_a_task, 120, "a demo reading task")
        assert claimed[0]["status"] == "in_progress"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert process.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{orthanc}/system")  # Orthanc was stopped with everything else
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{web}/healthz")
