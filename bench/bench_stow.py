"""STOW benchmark: one 300-frame BINARY SEG (512x512, 2 segments, on a 300-slice CT series), stored

  A) straight into Orthanc with STOW-RS (POST {orthanc}/dicom-web/studies), and
  B) through the pacslabel gateway (POST /dicomweb/studies on a real uvicorn, ephemeral port): multipart
     parse, dcmread, task lookup, source geometry (cached per series), OHIF repairs, geometry validation
     (pixel data length-checked and scanned, not decoded), version stamping, the Part-10 file spliced from
     the received bytes, REST POST /instances, row + audit, commit.

Same Orthanc, same run, alternating A and B, a fresh SOP Instance UID per request (so Orthanc never answers
"AlreadyStored"). Prints per-run times, medians and the ratio B/A (target <= 1.3), and beside them the CPU
seconds each request cost (this process, i.e. the client and the gateway, plus Orthanc's, from /proc): on a
shared machine the wall times carry the other processes' load, the CPU times much less. Python GC pauses
inside a gateway request are printed too.

--profile then times each step of the gateway's save in-process (same process, same Orthanc and database, the
medians of --runs calls each): multipart parse, dcmread + locating the elements, prepare (task, cached source
geometry, OHIF repairs, validation), stamping, Part-10 encoding (spliced, and a full pydicom encode for
comparison), sha256, the REST store into Orthanc, and a whole in-process save (all of it plus the database).
Usage: .venv/bin/python bench/bench_stow.py [--runs 7] [--frames 300] [--profile [--cprofile FILE]]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import logging
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import TypeVar

import highdicom as hd
import httpx
import numpy as np
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations import service
from pacslabel.annotations.models import AnnotationOrigin, AnnotationVersion
from pacslabel.annotations.part10_splice import encode_part10, full_part10, read_part10
from pacslabel.annotations.routes import router as annotations_router
from pacslabel.annotations.seg_building import SegmentSpec, build_segmentation
from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.db.base import utcnow
from pacslabel.db.migrate import upgrade_to_head
from pacslabel.dicomweb.multipart import encode_multipart_related, parse_multipart_related, related_boundary
from pacslabel.dicomweb.stow import stow_router
from pacslabel.orthanc.client import OrthancClient
from pacslabel.orthanc.supervisor import OrthancProcess
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.service import apply_project_file
from pacslabel.settings import Settings
from pacslabel.tasks.models import Task
from pacslabel.users import service as user_service
from pacslabel.users.models import User
from pacslabel.web.app import create_app

T = TypeVar("T")
LESION = SegmentSpec(1, "lesion", Code("49755003", "SCT", "Morphologically Altered Structure"),
                     Code("108369006", "SCT", "Neoplasm"), (255, 0, 0))
CYST = SegmentSpec(2, "cyst", Code("49755003", "SCT", "Morphologically Altered Structure"),
                   Code("367643001", "SCT", "Cyst"), (0, 0, 255))
PROJECT_YAML = """
slug: bench
name: Bench
selection: {item: study, routes: [bench], modalities: [CT]}
protocol:
  segments:
    - label: lesion
      category: {CodeValue: "49755003", CodingSchemeDesignator: SCT, CodeMeaning: Morphologically Altered Structure}
      type: {CodeValue: "108369006", CodingSchemeDesignator: SCT, CodeMeaning: Neoplasm}
      color: "#ff0000"
    - label: cyst
      category: {CodeValue: "49755003", CodingSchemeDesignator: SCT, CodeMeaning: Morphologically Altered Structure}
      type: {CodeValue: "367643001", CodingSchemeDesignator: SCT, CodeMeaning: Cyst}
      color: "#0000ff"
split: {ratios: {train: 0.7, validation: 0.15, test: 0.15}}
readers_per_split: {train: 1, validation: 1, test: 1}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ct_series(frames: int) -> list[Dataset]:
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    pixels = np.zeros((512, 512), dtype=np.int16).tobytes()
    datasets = []
    for n in range(frames):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Pseudo", "BENCH-1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "CT", 1, n + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-200.0, -200.0, n * 1.25]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.78125, 0.78125], 1.25
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels
        datasets.append(ds)
    return datasets


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_new_uid(data: bytes, old_uid: str) -> bytes:
    """The same Part-10 bytes with another SOP Instance UID of the same length (a new instance for Orthanc)."""
    new_uid = old_uid[:-8] + f"{time.monotonic_ns() % 10**8:08d}"
    return data.replace(old_uid.encode(), new_uid.encode())


def setup_database(root: Path, source: list[Dataset]) -> tuple[str, str]:
    url = f"sqlite:///{root / 'pacslabel.db'}"
    upgrade_to_head(url)
    engine = create_db_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        user = user_service.create_user(session, "reader1", "annotator", "a long enough password")
        token = user_service.create_api_token(session, "reader1")
        project: Project = apply_project_file(session, PROJECT_YAML, "bench").project
        at = utcnow()
        patient = CatalogPatient(pseudonym="BENCH-1", first_received_at=at)
        session.add(patient)
        session.flush()
        study = CatalogStudy(study_instance_uid=str(source[0].StudyInstanceUID), patient_id=patient.id,
                             first_received_at=at)
        session.add(study)
        session.flush()
        series_uid = str(source[0].SeriesInstanceUID)
        session.add(CatalogSeries(series_instance_uid=series_uid, study_id=study.id, modality="CT", route="bench",
                                  instance_count=len(source), first_received_at=at, last_received_at=at))
        item = ProjectItem(project_id=project.id, unit="study", unit_uid=study.study_instance_uid, study_id=study.id,
                           patient_id=patient.id, series_uids=[series_uid], split="train", stage="continuous",
                           order_key=hashlib.sha256(series_uid.encode()).hexdigest(), released_at=at)
        session.add(item)
        session.flush()
        session.add(Task(project_id=project.id, item_id=item.id, reader_id=user.id, purpose="read",
                         status="in_progress", protocol_version=project.protocol_version))
    engine.dispose()
    return url, token


class GcClock:
    """Wall time spent in Python's cyclic garbage collector (this process), to tell its pauses from the save's
    own cost: a full collection walks every object of the process (300 cached source datasets included)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of another process so far (Linux /proc): Orthanc's share of a request, which
    the other helpers' load on this 2-core machine hardly changes, unlike wall time."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(times: dict[str, list[tuple[float, float]]], name: str, work: Callable[[], T]) -> T:
    # Wall time, and this process's CPU time: the other helpers' load inflates the first, hardly the second
    # (the REST store's time is mostly Orthanc's CPU, which the second does not count).
    started, cpu = time.perf_counter(), time.process_time()
    result = work()
    times.setdefault(name, []).append((time.perf_counter() - started, time.process_time() - cpu))
    return result


def _profile_once(times: dict[str, list[tuple[float, float]]], orthanc: OrthancClient, factory: sessionmaker[Session],
                  seg_bytes: bytes, seg_uid: str) -> None:
    body, header = encode_multipart_related([with_new_uid(seg_bytes, seg_uid)])
    with session_scope(factory) as session:
        user = session.query(User).filter_by(username="reader1").one()
        boundary = related_boundary(header)
        [part] = _timed(times, "multipart parse", lambda: parse_multipart_related(body, boundary))
        received = _timed(times, "dcmread + locate elements", lambda: read_part10(part.content))
        prepared = _timed(times, "prepare (task, source, repairs, validation)",
                          lambda: service.prepare_annotation(session, orthanc, user, received.dataset))
        stamped = _timed(times, "stamp version", lambda: service._stamp(
            prepared.dataset, author="reader1", author_role="annotator", task_series_uid=generate_uid(),
            series_number=3100, instance_number=1, predecessor_sop_instance_uid=None))
        data = _timed(times, "Part-10 encode (spliced)", lambda: encode_part10(stamped, received))
        _timed(times, "Part-10 encode (full pydicom, not used)", lambda: full_part10(stamped))
        _timed(times, "sha256", lambda: hashlib.sha256(data).hexdigest())
        _timed(times, "REST store into Orthanc", lambda: orthanc.store_instance(data))
        session.rollback()
    body, header = encode_multipart_related([with_new_uid(seg_bytes, seg_uid)])
    with session_scope(factory) as session:
        user = session.query(User).filter_by(username="reader1").one()

        def whole_save() -> None:
            [part] = parse_multipart_related(body, related_boundary(header))
            received = read_part10(part.content)
            service.save_annotation(session, orthanc, user, received.dataset, origin=AnnotationOrigin.OHIF,
                                    received=received)

        _timed(times, "whole save in-process (all steps + database)", whole_save)


def profile_steps(orthanc: OrthancClient, database_url: str, seg_bytes: bytes, seg_uid: str, runs: int) -> None:
    """Time each step of a gateway save in-process; the steps are the functions the STOW route calls."""
    engine = create_db_engine(database_url)
    times: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        _profile_once(times, orthanc, make_sessionmaker(engine), seg_bytes, seg_uid)
    engine.dispose()
    print(f"in-process medians of {runs} runs:  {'wall':>9s} {'CPU':>9s}")
    for name, values in times.items():
        wall = statistics.median(value[0] for value in values)
        cpu = statistics.median(value[1] for value in values)
        print(f"  {name:48s} {wall * 1000:7.1f} ms {cpu * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="time each step of the save in-process")
    parser.add_argument("--cprofile", type=Path, help="with --profile: write cProfile stats of the steps here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-stow-") as tmp:
        root = Path(tmp)
        settings = Settings(env="test", var_dir=root / "var", log_format="text", log_level="WARNING",  # type: ignore[call-arg]
                            orthanc_url=f"http://127.0.0.1:{free_port()}", orthanc_dicom_port=free_port(),
                            orthanc_password="bench-password", session_secret="bench",
                            pseudonym_key="bench-pseudonym-key", scp_port=free_port())
        with OrthancProcess(settings) as orthanc_process, OrthancClient.from_settings(settings) as orthanc:
            source = ct_series(args.frames)
            started = time.perf_counter()
            for ds in source:
                orthanc.store_instance(part10(ds))
            print(f"source: {args.frames} CT slices 512x512 stored in {time.perf_counter() - started:.1f} s")
            labels = np.zeros((args.frames, 512, 512), dtype=np.uint8)
            # Two segments, one frame per slice in all: a single-segment highdicom SEG puts its
            # SegmentIdentificationSequence in the shared groups, which seg_validation does not read yet.
            half = args.frames // 2
            labels[:half, 200:300, 180:320] = 1
            labels[half:, 200:300, 180:320] = 2
            from pacslabel.annotations.geometry import SourceSeries
            seg = build_segmentation(labels, SourceSeries.from_instances(source), [LESION, CYST],
                                     series_instance_uid=str(hd.UID()), series_number=99, instance_number=1,
                                     author="Bench^Reader")
            seg_bytes = part10(seg)
            seg_uid = str(seg.SOPInstanceUID)
            print(f"SEG: {seg.NumberOfFrames} frames, {len(seg_bytes) / 1e6:.1f} MB Part-10")

            database_url, token = setup_database(root, source)
            app = create_app(settings.model_copy(update={"database_url": database_url}))
            app.include_router(stow_router)
            app.include_router(annotations_router)
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   access_log=False))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)

            direct_times: list[float] = []
            gateway_times: list[float] = []
            direct_cpu: list[float] = []
            gateway_cpu: list[float] = []
            gc_clock = GcClock()

            def cpu_now() -> np.ndarray:  # [this process, Orthanc]
                return np.array([time.process_time(), process_cpu(orthanc_process.pid)])

            with httpx.Client(timeout=120, headers={"Accept-Encoding": "identity"}, trust_env=False) as http:
                orthanc_stow = f"{settings.orthanc_url}/dicom-web/studies"
                auth = (settings.orthanc_username, "bench-password")
                for run in range(args.runs + 1):  # run 0 warms both paths up and is not counted
                    body, header = encode_multipart_related([with_new_uid(seg_bytes, seg_uid)])
                    c0, t0 = cpu_now(), time.perf_counter()
                    direct = http.post(orthanc_stow, content=body, headers={"Content-Type": header,
                                                                            "Accept": "application/dicom+json"},
                                       auth=auth)
                    t1, c1 = time.perf_counter(), cpu_now()
                    body, header = encode_multipart_related([with_new_uid(seg_bytes, seg_uid)])
                    c2, t2, g2 = cpu_now(), time.perf_counter(), gc_clock.total
                    gateway = http.post(f"http://127.0.0.1:{port}/dicomweb/studies", content=body,
                                        headers={"Content-Type": header, "Authorization": f"Bearer {token}"})
                    t3, c3, g3 = time.perf_counter(), cpu_now(), gc_clock.total
                    if direct.status_code != 200 or gateway.status_code != 200:
                        raise SystemExit(f"STOW failed: Orthanc {direct.status_code}, gateway {gateway.status_code} "
                                         f"{gateway.text[:500]}")
                    if run == 0:
                        continue
                    direct_times.append(t1 - t0)
                    gateway_times.append(t3 - t2)
                    direct_cpu.append(float(np.sum(c1 - c0)))
                    gateway_cpu.append(float(np.sum(c3 - c2)))
                    print(f"run {run}: Orthanc STOW {t1 - t0:.3f} s | gateway {t3 - t2:.3f} s | "
                          f"ratio {(t3 - t2) / (t1 - t0):.2f} | CPU (ours + Orthanc) "
                          f"{(c1 - c0)[0]:.3f} + {(c1 - c0)[1]:.3f} s vs {(c3 - c2)[0]:.3f} + {(c3 - c2)[1]:.3f} s"
                          + (f" | Python GC {g3 - g2:.3f} s" if g3 - g2 > 0.005 else ""))
            if args.profile:
                profiler = cProfile.Profile() if args.cprofile else None
                if profiler is not None:
                    profiler.enable()
                profile_steps(orthanc, database_url, seg_bytes, seg_uid, args.runs)
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.cprofile)
            server.should_exit = True
            thread.join(timeout=10)
            engine = create_db_engine(database_url)
            with session_scope(make_sessionmaker(engine)) as session:
                versions = session.query(AnnotationVersion).count()
            engine.dispose()
            md, mg = statistics.median(direct_times), statistics.median(gateway_times)
            print(f"median: Orthanc STOW {md:.3f} s | gateway {mg:.3f} s | ratio {mg / md:.2f} (target <= 1.3); "
                  f"{versions} versions stored")
            cd, cg = statistics.median(direct_cpu), statistics.median(gateway_cpu)
            print(f"median CPU (this process: client + gateway; + Orthanc): Orthanc STOW {cd:.3f} s | gateway "
                  f"{cg:.3f} s | ratio {cg / cd:.2f}")


if __name__ == "__main__":
    main()
