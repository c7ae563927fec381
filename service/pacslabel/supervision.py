"""`pacslabel up`: one parent that supervises Orthanc, the web app, the storage SCP and the workers.

Components run as separate processes (the GIL; and so a crash of one does not take the others down). A child
that dies is restarted with backoff; Ctrl-C or SIGTERM stops the children, then Orthanc.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        env = dict(os.environ, TCP_NODELAY="1")
        self.process = subprocess.Popen(self.argv, env=env)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %s)", self.name, self.process.pid)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pacslabel.cli", *args]


def plan_children(settings: Settings, *, start_scp: bool, workers: int) -> list[Child]:
    children = [Child("web", _cli("web"))]
    if start_scp:
        children.append(Child("scp", _cli("scp")))
    if workers > 0:
        # One child that runs and restarts its own N worker processes.
        children.append(Child("workers", _cli("worker", "--count", str(workers))))
    return children


def run_all(settings: Settings, *, start_scp: bool = True, workers: int = 2,
            after_start: Callable[[], None] | None = None) -> None:
    from pacslabel.db.migrate import upgrade_to_head
    from pacslabel.orthanc.supervisor import OrthancProcess, check_external_orthanc

    upgrade_to_head(settings.effective_database_url)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    with contextlib.ExitStack() as stack:
        if settings.orthanc_managed:
            stack.enter_context(OrthancProcess(settings))
        else:
            check_external_orthanc(settings)
        children = plan_children(settings, start_scp=start_scp, workers=workers)
        for child in children:
            child.start()
        _print_urls(settings, start_scp)
        if after_start is not None:
            threading.Thread(target=_run_logged, args=(after_start,), name="after-start", daemon=True).start()
        try:
            while not stopping:
                _restart_dead(children)
                time.sleep(0.5)
        finally:
            for child in reversed(children):
                child.stop()
            logger.info("all components stopped")


def _run_logged(task: Callable[[], None]) -> None:
    try:
        task()
    except Exception:  # a failed demo seeding must not stop a running system
        logger.exception("start-up task failed")


def _restart_dead(children: list[Child]) -> None:
    now = time.monotonic()
    for child in children:
        if child.process is None or child.process.poll() is None:
            continue
        if child.next_start == 0.0:
            # A child that ran for a minute gets its backoff reset; a crash loop backs off up to 30 s.
            if now - child.started_at > 60:
                child.restarts = 0
            delay = min(MAX_BACKOFF_S, 0.5 * 2**child.restarts)
            logger.warning("%s exited with %s; restarting in %.1f s", child.name, child.process.returncode, delay)
            child.next_start = now + delay
        elif now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            child.start()


def _print_urls(settings: Settings, start_scp: bool) -> None:
    lines = [
        f"pacslabel web      {settings.web_url}",
        f"  health           {settings.web_url}/healthz  {settings.web_url}/readyz",
        f"  API docs         {settings.web_url}/docs",
        f"Orthanc (loopback) {settings.orthanc_url}  user {settings.orthanc_username} "
        "(password: pacslabel config --show-secrets)",
    ]
    if start_scp:
        lines.append(f"storage SCP        {settings.scp_ae_title}@{settings.scp_host}:{settings.scp_port}")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
