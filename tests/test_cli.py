"""The command line as an administrator uses it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.users import service as user_service


def run_cli(tmp_path: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACSLABEL_")}
    environment.update({"PACSLABEL_VAR_DIR": str(tmp_path / "var"), "PACSLABEL_LOG_FORMAT": "text", **env})
    return subprocess.run([sys.executable, "-m", "pacslabel.cli", *args], input=stdin, capture_output=True,
                          text=True, env=environment, timeout=120, check=False)


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("up", "migrate", "user", "token", "demo", "config", "web", "scp", "worker", "ingest", "project",
                    "review", "access", "export"):
        assert command in result.stdout, command


def test_user_and_token_commands_create_a_usable_bearer_token(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "migrate").returncode == 0
    added = run_cli(tmp_path, "user", "add", "alice", "--role", "admin", "--password-stdin",
                    stdin="a long enough password\n")
    assert added.returncode == 0, added.stderr
    created = run_cli(tmp_path, "token", "create", "alice")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("plk_")
    engine = create_db_engine(f"sqlite:///{(tmp_path / 'var' / 'pacslabel.db').resolve()}")
    with session_scope(make_sessionmaker(engine)) as session:
        assert user_service.authenticate_token(session, token).username == "alice"
        assert user_service.authenticate_password(session, "alice", "a long enough password").role == "admin"
    engine.dispose()


def test_adding_a_user_with_a_bad_role_is_one_clear_error(tmp_path: Path) -> None:
    run_cli(tmp_path, "migrate")
    result = run_cli(tmp_path, "user", "add", "bob", "--role", "wizard")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["pacslabel: role must be one of admin, reviewer, annotator, ml"]


def test_config_masks_secrets_unless_asked(tmp_path: Path) -> None:
    masked = json.loads(run_cli(tmp_path, "config", "--json").stdout)
    shown = json.loads(run_cli(tmp_path, "config", "--json", "--show-secrets").stdout)
    assert masked["orthanc_password"] == "********"
    assert shown["orthanc_password"] not in ("", "********")
    assert masked["orthanc_url"] == "http://127.0.0.1:8042" and masked["orthanc_username"] == "pacslabel"


@pytest.mark.parametrize(("variable", "value"), [("PACSLABEL_WEB_PORT", "eighty"),
                                                 ("PACSLABEL_ENV", "staging")])
def test_bad_config_value_is_one_line_and_exit_2(tmp_path: Path, variable: str, value: str) -> None:
    result = run_cli(tmp_path, "config", **{variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0]


def test_unreachable_external_orthanc_stops_up_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(tmp_path, "up", PACSLABEL_ORTHANC_MANAGED="false",
                     PACSLABEL_ORTHANC_URL=f"http://127.0.0.1:{port}", PACSLABEL_ORTHANC_PASSWORD="x",
                     PACSLABEL_ORTHANC_TIMEOUT_S="2")
    assert result.returncode != 0
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("pacslabel:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in result.stderr
