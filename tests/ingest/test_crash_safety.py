"""Kill -9 of the SCP and of workers at random moments, and Orthanc stopped ~30 s, during a 300-instance send:
every acknowledged instance ends up in Orthanc exactly once, and the spool ends empty."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import func, select

from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.deid import Deidentifier, DeidOptions
from pacslabel.ingest.models import IngestItem, ItemStatus, QuarantineItem
from pacslabel.orthanc.client import OrthancClient
from pacslabel.orthanc.supervisor import OrthancProcess
from tests.fixtures.orthanc import ct_dataset, free_port, orthanc_test_settings
from tests.ingest.helpers import SEND_CLASSES, write_dataset

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

COUNT = 300
ORTHANC_DOWN_S = 30.0
SEND_INTERVAL_S = 0.08  # ~25 s of sending, so that the kills land mid-send


class Sender(threading.Thread):
    """A persistent SCU, like a PACS: resends whatever did not get a Success, reconnects after aborts."""

    def __init__(self, port: int, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.port, self.files = port, files
        self.acknowledged: dict[Path, int] = {}
        self.failures = 0
        self.ae = AE(ae_title="CT1")
        self.ae.maximum_pdu_size = 0
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 10
        for uid in SEND_CLASSES[:1]:
            self.ae.add_requested_context(uid, "1.2.840.10008.1.2.1")

    def run(self) -> None:
        pending = list(self.files)
        deadline = time.monotonic() + 150
        while pending and time.monotonic() < deadline:
            assoc = self.ae.associate("127.0.0.1", self.port, ae_title="PACSLABEL")
            if not assoc.is_established:
                time.sleep(0.2)
                continue
            try:
                while pending and assoc.is_established:
                    path = pending[0]
                    try:
                        status = assoc.send_c_store(path)
                    except Exception:  # noqa: BLE001 — connection died mid-send
                        break
                    if "Status" in status and status.Status == 0x0000:
                        self.acknowledged[path] = self.acknowledged.get(path, 0) + 1
                        pending.pop(0)
                        time.sleep(SEND_INTERVAL_S)
                    else:
                        self.failures += 1
                        time.sleep(0.1)
            finally:
                if assoc.is_established:
                    assoc.release()


def _spawn(module: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def test_kill_9_and_orthanc_outage_lose_nothing_that_was_acknowledged(tmp_path: Path, db_url: str) -> None:
    # A private Orthanc: this test stops it, and counts instances in it.
    orthanc_settings = orthanc_test_settings(tmp_path / "orthanc-var")
    orthanc = OrthancProcess(orthanc_settings, grace_period_s=5.0).start()
    client = OrthancClient.from_settings(orthanc_settings)
    files_dir = tmp_path / "in"
    files_dir.mkdir()
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    files = [write_dataset(ct_dataset(study_instance_uid=study, series_instance_uid=series[n % 3],
                                      instance_number=n + 1), files_dir / f"{n:04d}.dcm") for n in range(COUNT)]
    var = tmp_path / "var"
    port = free_port()
    env = {**os.environ, "PACSLABEL_ENV": "test", "PACSLABEL_VAR_DIR": str(var), "PACSLABEL_DATABASE_URL": db_url,
           "PACSLABEL_SCP_PORT": str(port), "PACSLABEL_SCP_MIN_FREE_BYTES": "0",
           "PACSLABEL_PSEUDONYM_KEY": "test-pseudonym-key", "PACSLABEL_SESSION_SECRET": "test-session-secret",
           "PACSLABEL_ORTHANC_URL": orthanc_settings.orthanc_url,
           "PACSLABEL_ORTHANC_PASSWORD": orthanc_settings.secret("orthanc_password"),
           "PACSLABEL_ORTHANC_TIMEOUT_S": "3", "PACSLABEL_LOG_FORMAT": "text", "PACSLABEL_LOG_LEVEL": "WARNING"}
    log = tmp_path / "processes.log"
    worker_args = ("--processes", "1", "--lease-s", "4", "--backoff-cap-s", "1")
    rng = random.Random(1234)
    scp = _spawn("pacslabel.ingest.storage_scp", env, log)
    workers = [_spawn("pacslabel.ingest.worker", env, log, *worker_args) for _ in range(2)]
    kills = {"scp": 0, "worker": 0}
    sender = Sender(port, files)
    try:
        time.sleep(1.5)
        sender.start()
        started = time.monotonic()
        orthanc_down_at, orthanc_up_at = started + 4.0, started + 4.0 + ORTHANC_DOWN_S
        scp_kills_at = sorted(started + rng.uniform(2.0, 22.0) for _ in range(3))
        orthanc_stopped = False
        chaos_until = orthanc_up_at + 8.0
        while time.monotonic() < chaos_until:
            now = time.monotonic()
            if not orthanc_stopped and orthanc_down_at <= now < orthanc_up_at:
                orthanc.stop()
                orthanc_stopped = True
            if orthanc_stopped and now >= orthanc_up_at and not orthanc.is_running():
                orthanc.start()
            if scp_kills_at and now >= scp_kills_at[0]:
                scp_kills_at.pop(0)
                scp.send_signal(signal.SIGKILL)
                scp.wait()
                kills["scp"] += 1
                time.sleep(rng.uniform(0.0, 0.5))
                scp = _spawn("pacslabel.ingest.storage_scp", env, log)
            slot = rng.randrange(len(workers))
            workers[slot].send_signal(signal.SIGKILL)
            workers[slot].wait()
            kills["worker"] += 1
            workers[slot] = _spawn("pacslabel.ingest.worker", env, log, *worker_args)
            time.sleep(rng.uniform(0.5, 2.0))
        sender.join(timeout=120)
        assert not sender.is_alive()
        assert len(sender.acknowledged) == COUNT, f"sender gave up; {sender.failures} failures"

        # Drain: every acknowledged instance must reach Orthanc and leave the spool.
        engine = create_db_engine(db_url)
        factory = make_sessionmaker(engine)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with factory() as session:
                pending = session.scalar(select(func.count()).select_from(IngestItem)
                                         .where(IngestItem.status != ItemStatus.DONE))
            if pending == 0 and not list((var / "spool").glob("*.dcm")):
                break
            time.sleep(0.5)
        with factory() as session:
            statuses = dict(session.execute(select(IngestItem.status, func.count())
                                            .group_by(IngestItem.status)).all())
            quarantined = session.scalar(select(func.count()).select_from(QuarantineItem))
        engine.dispose()
        assert quarantined == 0, (log.read_text()[-3000:])
        assert set(statuses) == {ItemStatus.DONE}, (statuses, log.read_text()[-3000:])
        assert statuses[ItemStatus.DONE] >= COUNT  # re-sends of a lost Success add rows, never instances

        # Exactly once in Orthanc: the de-identified UID of every acknowledged file, and nothing else.
        deid = Deidentifier(b"test-pseudonym-key", DeidOptions())
        expected = {deid.deidentify_bytes(path.read_bytes()).sop_instance_uid for path in sender.acknowledged}
        assert client.count_instances() == len(expected) == COUNT
        missing = [uid for uid in expected if client.find_instance(uid) is None]
        assert missing == []
        assert list((var / "spool").glob("*.dcm")) == [] and list((var / "spool").glob("*.part")) == []
        assert kills["scp"] == 3 and kills["worker"] >= 10
    finally:
        for process in [scp, *workers]:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        client.close()
        orthanc.stop()
