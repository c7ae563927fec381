"""`pacslabel up --demo`: demo users and synthetic studies that enter through the storage SCP like any study.

Demo data never goes straight into Orthanc (invariant 1): it is sent with dcmtk's storescu to our own SCP and
takes the same de-identification path as a hospital's studies.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.errors import PacslabelError
from pacslabel.settings import Settings
from pacslabel.users import repository as user_repository
from pacslabel.users import service as user_service

logger = logging.getLogger(__name__)

DEMO_PASSWORD = "pacslabel-demo"
DEMO_USERS = [
    ("admin", "admin"),
    ("reader1", "annotator"),
    ("reader2", "annotator"),
    ("reader3", "annotator"),
    ("reviewer1", "reviewer"),
    ("ml1", "ml"),
]
DEMO_CALLING_AE = "DEMO_MODALITY"
DEMO_PROJECT_FILE = Path(__file__).with_name("demo-project.yaml")


def ensure_demo_users(factory: sessionmaker[Session]) -> list[str]:
    """Create the demo accounts that do not exist yet; returns the names created."""
    created = []
    with factory() as session, session.begin():
        for username, role in DEMO_USERS:
            if user_repository.get_user_by_name(session, username) is None:
                user_service.create_user(session, username, role, DEMO_PASSWORD)
                created.append(username)
    return created


def wait_for_scp(settings: Settings, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    env = dict(os.environ, TCP_NODELAY="1")
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["echoscu", "-aet", DEMO_CALLING_AE, "-aec", settings.scp_ae_title, settings.scp_host,
             str(settings.scp_port)], capture_output=True, env=env, check=False)
        if result.returncode == 0:
            return
        time.sleep(0.5)
    raise PacslabelError(f"the storage SCP did not answer C-ECHO on port {settings.scp_port} in {timeout_s:.0f} s")


def send_folder(settings: Settings, folder: Path) -> None:
    """C-STORE every file below `folder` to our SCP over one association (dcmtk storescu)."""
    if shutil.which("storescu") is None:
        raise PacslabelError("storescu (dcmtk) is not installed; run scripts/setup.sh")
    result = subprocess.run(
        ["storescu", "+sd", "+r", "-nh", "-aet", DEMO_CALLING_AE, "-aec", settings.scp_ae_title,
         settings.scp_host, str(settings.scp_port), str(folder)],
        capture_output=True, text=True, env=dict(os.environ, TCP_NODELAY="1"), check=False)
    if result.returncode != 0:
        raise PacslabelError(f"storescu failed with exit code {result.returncode}")


def seed_demo(settings: Settings, factory: sessionmaker[Session], scale: str = "full") -> None:
    if settings.env == "production":
        raise PacslabelError("demo data and demo passwords are refused in production")
    created = ensure_demo_users(factory)
    if created:
        logger.info("demo users created: %s (password %s)", ", ".join(created), DEMO_PASSWORD)
    demo_dir = settings.var_dir / "demo"
    marker = demo_dir / ".sent"
    if marker.exists():
        return
    from pacslabel.demo.synthetic import generate_demo_studies

    studies = demo_dir / "studies"
    if not (studies / "manifest.json").exists():
        generate_demo_studies(studies, scale=scale)  # type: ignore[arg-type]
    wait_for_scp(settings)
    send_folder(settings, studies)
    marker.write_text("sent\n")
    logger.info("demo studies sent through the storage SCP")
    wait_for_ingest(factory)
    apply_demo_project(factory)


def wait_for_ingest(factory: sessionmaker[Session], timeout_s: float = 300.0) -> None:
    """Wait until the workers have forwarded everything queued (the demo project selects from the catalog)."""
    from pacslabel.ingest.models import IngestItem, ItemStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with factory() as session:
            pending = session.scalar(select(func.count()).select_from(IngestItem).where(
                IngestItem.status.in_([ItemStatus.QUEUED, ItemStatus.RUNNING])))
        if not pending:
            return
        time.sleep(1.0)
    raise PacslabelError(f"the demo studies were not all ingested within {timeout_s:.0f} s")


def apply_demo_project(factory: sessionmaker[Session]) -> None:
    """Apply the demo project and file the ingested series into it, so readers can press Next at once."""
    from pacslabel.projects import service as project_service

    with factory() as session, session.begin():
        result = project_service.apply_project_file(session, DEMO_PROJECT_FILE.read_text(), "demo",
                                                    DEMO_PROJECT_FILE.name)
        project = project_service.require_project(session, result.project.slug)
        project_service.sync_project_items(session, project, quiet_s=0.0)
