"""Gateway benchmark: what a viewer loads for one 300-slice 512x512 CT, through pacslabel's /dicomweb gateway
versus straight from Orthanc's DICOMweb plugin, in the same run on the same Orthanc.

One "load" = QIDO (study lookup + series list) + series /metadata + all 300 frames, 6 frames in flight
(a browser's per-host connection limit), `Accept-Encoding: identity` on both sides as OHIF's frame
requests are not gzip-worthy. The gateway runs under uvicorn on an ephemeral port and is used by a reader
holding a task on the study (bearer token), so every request goes through authentication and the access
policy. The first gateway load has a cold metadata cache; later ones are warm (as in a reading session).

Prints per-step medians over --runs loads (alternating direct/gateway) and the ratio gateway/direct
(target <= 1.10). Usage: .venv/bin/python bench/bench_gateway.py [--runs 5] [--slices 300] [--concurrency 6]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy  # noqa: E402
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope  # noqa: E402
from pacslabel.db.migrate import upgrade_to_head  # noqa: E402
from pacslabel.dicomweb.metadata_cache import invalidate_series  # noqa: E402
from pacslabel.dicomweb.routes import router as dicomweb_router  # noqa: E402
from pacslabel.orthanc.client import OrthancClient  # noqa: E402
from pacslabel.orthanc.supervisor import OrthancProcess  # noqa: E402
from pacslabel.projects.models import Project, ProjectItem  # noqa: E402
from pacslabel.settings import Settings  # noqa: E402
from pacslabel.tasks.models import Task  # noqa: E402
from pacslabel.users import service as user_service  # noqa: E402
from pacslabel.web.app import create_app  # noqa: E402

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
JSON_ACCEPT = "application/dicom+json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def ct_slices(count: int) -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    datasets = []
    for index in range(count):
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Bench^Synthetic", "BENCH-1", "20240101", "1200"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.StudyID = "CT", 1, index + 1, "1"
        ds.AccessionNumber = ds.ReferringPhysicianName = ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = rng.integers(-1000, 2000, (512, 512), dtype=np.int16).tobytes()
        datasets.append(ds)
    return datasets


def load(base: str, headers: dict[str, str], study: str, series: str, sops: list[str], concurrency: int,
         sessions: list[requests.Session]) -> dict[str, float]:
    """One viewer load; returns seconds per step."""
    times: dict[str, float] = {}
    s = sessions[0]

    def get(path: str, accept: str, session: requests.Session = s, **params: str) -> requests.Response:
        response = session.get(f"{base}/{path}", params=params or None,
                               headers={**headers, "Accept": accept, "Accept-Encoding": "identity"})
        response.raise_for_status()
        _ = response.content
        return response

    start = time.perf_counter()
    get("studies", JSON_ACCEPT, StudyInstanceUID=study, limit="101", offset="0")
    get(f"studies/{study}/series", JSON_ACCEPT)
    times["qido"] = time.perf_counter() - start
    start = time.perf_counter()
    get(f"studies/{study}/series/{series}/metadata", JSON_ACCEPT)
    times["metadata"] = time.perf_counter() - start
    local = threading.local()
    pool_sessions = iter(sessions)
    lock = threading.Lock()

    def frame(sop: str) -> int:
        if not hasattr(local, "session"):
            with lock:
                local.session = next(pool_sessions)
        return len(get(f"studies/{study}/series/{series}/instances/{sop}/frames/1", FRAME_ACCEPT,
                       local.session).content)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        sizes = list(pool.map(frame, sops))
    times["frames"] = time.perf_counter() - start
    assert all(size > 512 * 512 * 2 for size in sizes)
    times["total"] = times["qido"] + times["metadata"] + times["frames"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=6)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        var = Path(tmp) / "var"
        db_url = f"sqlite:///{Path(tmp) / 'pacslabel.db'}"
        upgrade_to_head(db_url)
        settings = Settings(env="test", var_dir=var, log_format="text", database_url=db_url,
                            orthanc_url=f"http://127.0.0.1:{free_port()}", orthanc_dicom_port=free_port(),
                            orthanc_password=f"bench-{secrets.token_hex(8)}", session_secret="bench-session",
                            pseudonym_key="bench-key", scp_port=free_port(), orthanc_startup_timeout_s=30.0)
        with OrthancProcess(settings, grace_period_s=5.0), OrthancClient.from_settings(settings) as client:
            datasets = ct_slices(args.slices)
            started = time.perf_counter()
            for offset in range(0, len(datasets), 25):
                client.store_instances(datasets[offset:offset + 25])
            print(f"stored {len(datasets)} slices of 512x512 in {time.perf_counter() - started:.1f} s")
            study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
            sops = [str(d.SOPInstanceUID) for d in datasets]
            token = _reader_with_task(db_url, study, series, len(sops))

            port = free_port()
            app = create_app(settings)
            app.include_router(dicomweb_router)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   access_log=False))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            try:
                invalidate_series(study, series)
                direct = (f"{settings.orthanc_url}/dicom-web", {})
                gateway = (f"http://127.0.0.1:{port}/dicomweb", {"Authorization": f"Bearer {token}"})
                auth = ("pacslabel", settings.secret("orthanc_password"))
                results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
                for run in range(args.runs + 1):  # run 0 warms the page cache (and measures a cold cache)
                    for name, (base, headers) in (("direct", direct), ("gateway", gateway)):
                        sessions = [_session(auth if name == "direct" else None) for _ in range(args.concurrency)]
                        times = load(base, headers, study, series, sops, args.concurrency, sessions)
                        for session in sessions:
                            session.close()
                        label = "warm-up" if run == 0 else f"run {run}"
                        print(f"{label:8} {name:8} " + "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in times.items()))
                        if run:
                            results[name].append(times)
                _report(results, len(sops))
            finally:
                server.should_exit = True
                thread.join(timeout=10)


def _session(auth: tuple[str, str] | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.auth = auth
    return session


def _reader_with_task(db_url: str, study: str, series: str, count: int) -> str:
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        reader = user_service.create_user(session, "bench_reader", "annotator")
        token = user_service.create_api_token(session, "bench_reader")
        patient = CatalogPatient(pseudonym="P-bench")
        session.add(patient)
        session.flush()
        study_row = CatalogStudy(study_instance_uid=study, patient_id=patient.id)
        session.add(study_row)
        session.flush()
        session.add(CatalogSeries(series_instance_uid=series, study_id=study_row.id, modality="CT", route="bench",
                                  instance_count=count))
        project = Project(slug="bench", name="Bench", definition={}, definition_sha256="0" * 64)
        session.add(project)
        session.flush()
        item = ProjectItem(project_id=project.id, unit="study", unit_uid=study, study_id=study_row.id,
                           patient_id=patient.id, series_uids=[series], split="train", stage="continuous",
                           order_key="k")
        session.add(item)
        session.flush()
        session.add(Task(project_id=project.id, item_id=item.id, reader_id=reader.id, purpose="read", slot=0,
                         status="in_progress", protocol_version=1))
    engine.dispose()
    return token


def _report(results: dict[str, list[dict[str, float]]], frames: int) -> None:
    median: Callable[[str, str], float] = lambda name, key: statistics.median(r[key] for r in results[name])  # noqa: E731
    print(f"\nmedians over {len(results['direct'])} loads ({frames} frames each):")
    for key in ("qido", "metadata", "frames", "total"):
        d, g = median("direct", key), median("gateway", key)
        print(f"  {key:9} direct {d * 1000:8.1f} ms   gateway {g * 1000:8.1f} ms   ratio {g / d:5.2f}")
    fps = frames / median("gateway", "frames")
    ratio = median("gateway", "total") / median("direct", "total")
    print(f"  gateway frames/s: {fps:.0f}")
    print(f"RATIO gateway/direct (total viewer load) = {ratio:.2f}  (target <= 1.10) "
          f"{'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
