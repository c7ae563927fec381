"""Ingest benchmark: 300 CT images of 512x512 sent with DCMTK storescu (TCP_NODELAY=1, one association)

  A) straight into Orthanc's DICOM port (Orthanc started with TCP_NODELAY=1, SQLite index, empty), and
  B) through pacslabel: storage SCP (fsync + queue row before Success) + N worker processes (de-identify,
     REST POST /instances into an equally fresh Orthanc), until all 300 are de-identified in Orthanc.

Prints, per run and as medians: storescu release time for A and B, pacslabel end-to-end time, and the ratios.
Usage: .venv/bin/python bench/bench_ingest.py [--runs 3] [--workers 2] [--count 300]
(`--workers 0`: the storage SCP alone, release time only.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.db.migrate import upgrade_to_head
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.orthanc.client import OrthancClient
from pacslabel.orthanc.supervisor import OrthancProcess
from pacslabel.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared CT factory lives under tests/

from tests.fixtures.series import Identity, ct_slice  # noqa: E402

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def write_series(directory: Path, count: int) -> list[Path]:
    """300 CT slices, 512x512 int16, Explicit VR LE (~525 KB each), with identifying header values."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    study, series, frame = generate_uid(), [generate_uid() for _ in range(3)], generate_uid()
    base = (rng.normal(0, 30, (512, 512)) + 40).astype(np.int16)
    identity = Identity(patient_name="Bench^Patient", patient_id="BENCH001", patient_birth_date="19600101",
                        patient_sex="M", study_date="20240105", study_time="101010", accession_number="ACC001",
                        study_id="1", referring_physician_name="Doe^John")
    paths = []
    for n in range(count):  # three series interleaved, as a scanner sends them
        ds = ct_slice(study_instance_uid=study, series_instance_uid=series[n % 3], frame_of_reference_uid=frame,
                      series_number=n % 3 + 1, instance_number=n // 3 + 1, pixels=np.roll(base, n, axis=0),
                      position=(0.0, 0.0, float(n)), pixel_spacing=(0.7, 0.7), identity=identity,
                      InstitutionName="General Hospital")
        path = directory / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(aet: str, aec: str, port: int, directory: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(["storescu", "-aet", aet, "-aec", aec, "+sd", "-nh", "127.0.0.1", str(port),
                             str(directory)], env=DCMTK_ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-1000:]}")
    return elapsed


def settings_for(var: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "env": "test", "var_dir": var, "log_format": "text", "log_level": "WARNING",
        "orthanc_url": f"http://127.0.0.1:{free_port()}", "orthanc_dicom_port": free_port(),
        "orthanc_password": "bench-password", "session_secret": "bench", "pseudonym_key": "bench-pseudonym-key",
        "scp_port": free_port(), "scp_min_free_bytes": 0, **extra}
    return Settings(**values)  # type: ignore[arg-type]


def run_orthanc_direct(root: Path, series_dir: Path, count: int) -> float:
    settings = settings_for(root / "direct")
    with OrthancProcess(settings) as _, OrthancClient.from_settings(settings) as client:
        elapsed = storescu(settings.scp_ae_title, settings.orthanc_dicom_aet, settings.orthanc_dicom_port,
                           series_dir)
        stored = client.count_instances()
    if stored != count:
        raise SystemExit(f"Orthanc stored {stored} of {count}")
    return elapsed


def run_pacslabel(root: Path, series_dir: Path, count: int, workers: int) -> tuple[float, float]:
    var = root / "pacslabel"
    db_url = f"sqlite:///{var / 'pacslabel.db'}"
    settings = settings_for(var, database_url=db_url)
    upgrade_to_head(db_url)
    env = {**os.environ, "PACSLABEL_ENV": "test", "PACSLABEL_VAR_DIR": str(var), "PACSLABEL_DATABASE_URL": db_url,
           "PACSLABEL_SCP_PORT": str(settings.scp_port), "PACSLABEL_SCP_MIN_FREE_BYTES": "0",
           "PACSLABEL_PSEUDONYM_KEY": "bench-pseudonym-key", "PACSLABEL_SESSION_SECRET": "bench",
           "PACSLABEL_ORTHANC_URL": settings.orthanc_url, "PACSLABEL_ORTHANC_PASSWORD": "bench-password",
           "PACSLABEL_LOG_FORMAT": "text", "PACSLABEL_LOG_LEVEL": "WARNING"}
    engine = create_db_engine(db_url)
    factory = make_sessionmaker(engine)
    with OrthancProcess(settings) as _, OrthancClient.from_settings(settings) as client:
        processes = [subprocess.Popen([sys.executable, "-m", "pacslabel.ingest.storage_scp"], env=env)]
        processes += [subprocess.Popen([sys.executable, "-m", "pacslabel.ingest.worker", "--processes", "1"],
                                       env=env) for _ in range(workers)]
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(["echoscu", "-aec", "PACSLABEL", "127.0.0.1", str(settings.scp_port)],
                                 env=DCMTK_ENV, capture_output=True, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("storage SCP did not start")
                time.sleep(0.2)
            time.sleep(1.0)  # let the workers finish importing
            started = time.perf_counter()
            released = storescu("CT1", "PACSLABEL", settings.scp_port, series_dir)
            while workers:  # --workers 0 measures the storage SCP alone (release time only)
                with factory() as session:
                    done = session.scalar(select(func.count()).select_from(IngestItem)
                                          .where(IngestItem.status == ItemStatus.DONE))
                if done == count:
                    break
                if time.perf_counter() - started > 600:
                    raise SystemExit(f"only {done} of {count} forwarded")
                time.sleep(0.05)
            end_to_end = time.perf_counter() - started if workers else float("nan")
            if workers and client.count_instances() != count:
                raise SystemExit("Orthanc does not hold every instance")
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
    engine.dispose()
    return released, end_to_end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        series_dir = root / "series"
        files = write_series(series_dir, args.count)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{args.count} CT 512x512 instances, {size_mb:.1f} MB; storescu TCP_NODELAY=1, 1 association, "
              f"Orthanc SQLite index (fresh per run) started with TCP_NODELAY=1; pacslabel: SCP PDU unlimited, "
              f"fsync + SQLite row before Success, {args.workers} worker processes, REST POST /instances")
        direct, released, through = [], [], []
        for run in range(args.runs):
            subprocess.run(["sync"], check=False)
            d = run_orthanc_direct(root / f"run{run}", series_dir, args.count)
            r, t = run_pacslabel(root / f"run{run}", series_dir, args.count, args.workers)
            direct.append(d)
            released.append(r)
            through.append(t)
            print(f"run {run + 1}: Orthanc direct {d:.2f} s | pacslabel storescu released {r:.2f} s, "
                  f"all de-identified in Orthanc {t:.2f} s | ratio end-to-end {t / d:.2f}, release {r / d:.2f}")
            shutil.rmtree(root / f"run{run}", ignore_errors=True)
        md, mr, mt = statistics.median(direct), statistics.median(released), statistics.median(through)
        print(f"median: Orthanc direct {md:.2f} s ({args.count / md:.0f} inst/s); pacslabel released {mr:.2f} s "
              f"({args.count / mr:.0f} inst/s); end-to-end {mt:.2f} s ({args.count / mt:.0f} inst/s)")
        print(f"ratio end-to-end / direct = {mt / md:.2f} (target <= 1.5); "
              f"release / direct = {mr / md:.2f} (target <= 1.0)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
