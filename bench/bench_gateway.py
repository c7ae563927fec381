"""Gateway benchmark: what a viewer loads for one 300-slice 512x512 CT, through pacslabel's /dicomweb gateway
versus straight from Orthanc's DICOMweb plugin, in the same run on the same Orthanc.

One "load" = QIDO (study lookup + series list) + series /metadata + all 300 frames, 6 frames in flight
(a browser's per-host connection limit), `Accept-Encoding: identity` on both sides as OHIF's frame
requests are not gzip-worthy. The gateway runs as `pacslabel web` does, under uvicorn in its own process
(`--gateway thread` runs it in a thread of this process instead, sharing the GIL with the benchmark client),
and is used by a reader holding a task on the study (bearer token), so every request goes through
authentication and the access policy.

- default: every load reads the same study (a re-open: the gateway's series-metadata cache is warm after
  the warm-up load; Orthanc has no such cache);
- `--fresh`: every measured load reads a study stored just before it and never opened (the first open of a
  task's study: nothing of it is cached in the gateway, and the task is newer than the access snapshot).

The frames are fetched as a browser fetches them: by a native HTTP client, `curl --parallel` with 6
keep-alive connections (`--client curl`, default). `--client requests` fetches them from 6 threads of this
Python process instead: that client spends more CPU per frame than Orthanc does and contends with itself for
the interpreter lock, the more so the faster the server answers, so it measures itself as much as the server
(bench/RESULTS.md). QIDO and metadata are single requests, made with requests either way.

Prints per-step medians over --runs loads (alternating direct/gateway), the CPU seconds per frame of
Orthanc, the gateway process and the client during the frames step (from /proc and rusage: independent of how
the machine's other load delays each process), and the ratio gateway/direct (target <= 1.10).
Usage: .venv/bin/python bench/bench_gateway.py [--runs 5] [--fresh] [--client curl|requests] [--slices 300]
"""
from __future__ import annotations

import argparse
import base64
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.orthanc import free_port  # noqa: E402
from tests.fixtures.series import bench_ct_series  # noqa: E402
from tests.fixtures.worlds import add_study_item, catalogue_study, open_task  # noqa: E402

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope  # noqa: E402
from pacslabel.db.migrate import upgrade_to_head  # noqa: E402
from pacslabel.dicomweb.metadata_cache import invalidate_series  # noqa: E402
from pacslabel.orthanc.client import OrthancClient  # noqa: E402
from pacslabel.orthanc.supervisor import OrthancProcess  # noqa: E402
from pacslabel.projects.models import Project  # noqa: E402
from pacslabel.settings import Settings  # noqa: E402
from pacslabel.users import repository as user_repository  # noqa: E402
from pacslabel.users import service as user_service  # noqa: E402
from pacslabel.users.models import User  # noqa: E402
from pacslabel.web.app import create_app  # noqa: E402

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
JSON_ACCEPT = "application/dicom+json"


def load(base: str, headers: dict[str, str], study: str, series: str, sops: list[str], concurrency: int,
         sessions: list[requests.Session], cpu: Callable[[], dict[str, float]], client: str = "curl"
         ) -> dict[str, float]:
    """One viewer load; returns seconds per step, and CPU seconds per process during the frames step."""
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

    urls = [f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1" for sop in sops]
    cpu_before = cpu()
    start = time.perf_counter()
    if client == "curl":
        sizes = _curl_frames(urls, {**headers, "Accept": FRAME_ACCEPT, "Accept-Encoding": "identity"}, concurrency)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            sizes = list(pool.map(frame, sops))
    times["frames"] = time.perf_counter() - start
    times.update({f"cpu {k}": v - cpu_before[k] for k, v in cpu().items()})
    assert len(sizes) == len(sops) and all(size > 512 * 512 * 2 for size in sizes)
    times["total"] = times["qido"] + times["metadata"] + times["frames"]
    return times


def _curl_frames(urls: list[str], headers: dict[str, str], concurrency: int) -> list[int]:
    """GET every URL with curl, ``concurrency`` transfers at a time over reused connections; the body sizes.
    Any status but 200 fails the load."""
    lines = [f'header = "{name}: {value}"' for name, value in headers.items()]
    for url in urls:
        lines += [f'url = "{url}"', 'output = "/dev/null"']
    with tempfile.NamedTemporaryFile("w", suffix=".curlrc") as config:
        config.write("\n".join(lines) + "\n")
        config.flush()
        done = subprocess.run(["curl", "--silent", "--show-error", "--parallel", "--parallel-max", str(concurrency),
                               "--config", config.name, "--write-out", "%{http_code} %{size_download}\n"],
                              capture_output=True, text=True, check=True, env={**os.environ, "TCP_NODELAY": "1"})
    answers = [line.split() for line in done.stdout.splitlines() if line.strip()]
    if any(code != "200" for code, _ in answers):
        raise SystemExit(f"curl: not every frame answered 200: {sorted({code for code, _ in answers})}")
    return [int(size) for _, size in answers]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (and their children, e.g. uvicorn workers), from /proc."""
    total = 0.0
    for pid in pids:
        for each in [pid, *_children(pid)]:
            try:
                fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (the curl client)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--client", choices=("curl", "requests"), default="curl",
                        help="what fetches the frames: curl (native, as a browser; default) or 6 threads of requests")
    parser.add_argument("--gateway", choices=("process", "thread"), default="process",
                        help="run the gateway as `pacslabel web` does (its own uvicorn process, default) or in a "
                             "thread of this process (shares the GIL with the benchmark client)")
    parser.add_argument("--fresh", action="store_true",
                        help="each measured load reads a newly stored study (first open: gateway caches cold); "
                             "default: the same study every load (re-open: series metadata cached)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (with --gateway process)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        var = Path(tmp) / "var"
        db_url = f"sqlite:///{Path(tmp) / 'pacslabel.db'}"
        upgrade_to_head(db_url)
        settings = Settings(env="test", var_dir=var, log_format="text", database_url=db_url,
                            orthanc_url=f"http://127.0.0.1:{free_port()}", orthanc_dicom_port=free_port(),
                            orthanc_password=f"bench-{secrets.token_hex(8)}", session_secret="bench-session",
                            pseudonym_key="bench-key", scp_port=free_port(), orthanc_startup_timeout_s=30.0)
        with (OrthancProcess(settings, grace_period_s=5.0) as orthanc_process,
              OrthancClient.from_settings(settings) as client):
            port = free_port()
            study, series, sops = _store_series(client, args.slices)
            token = _reader_with_task(db_url, study, series, len(sops))
            stop, gateway_pid = _start_gateway(settings, port, args)
            orthanc_pid = orthanc_process.pid

            def cpu() -> dict[str, float]:
                return {"orthanc": _cpu_seconds([orthanc_pid] if orthanc_pid else []),
                        "gateway": _cpu_seconds([gateway_pid] if gateway_pid else []),
                        "bench": time.process_time() + _children_cpu_seconds()}

            try:
                if args.gateway == "thread":
                    invalidate_series(study, series)  # a subprocess starts with an empty cache anyway
                basic = base64.b64encode(f"pacslabel:{settings.secret('orthanc_password')}".encode()).decode()
                direct = (f"{settings.orthanc_url}/dicom-web", {"Authorization": f"Basic {basic}"})
                gateway = (f"http://127.0.0.1:{port}/dicomweb", {"Authorization": f"Bearer {token}"})
                auth = ("pacslabel", settings.secret("orthanc_password"))
                results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
                for run in range(args.runs + 1):  # run 0 warms the page cache (and measures a cold cache)
                    for name, (base, headers) in (("direct", direct), ("gateway", gateway)):
                        if args.fresh and run:
                            # A study never opened before, as when a reader opens the next task: nothing of
                            # it is in the gateway's caches (the task is even newer than the access snapshot).
                            study, series, sops = _store_series(client, args.slices)
                            _give_task(db_url, study, series, len(sops))
                        sessions = [_session(auth if name == "direct" else None) for _ in range(args.concurrency)]
                        times = load(base, headers, study, series, sops, args.concurrency, sessions, cpu,
                                     args.client)
                        for session in sessions:
                            session.close()
                        label = "warm-up" if run == 0 else f"run {run}"
                        print(f"{label:8} {name:8} " + "  ".join(f"{k} {v * 1000:6.0f} ms" for k, v in times.items()))
                        if run:
                            results[name].append(times)
                _report(results, len(sops))
            finally:
                stop()


def _start_gateway(settings: Settings, port: int, args: argparse.Namespace) -> tuple[Callable[[], None], int | None]:
    """Start the gateway app under uvicorn; returns the function that stops it and the process id (None: this
    process, whose CPU the "bench" column then includes)."""
    if args.gateway == "thread":
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)

        def stop_thread() -> None:
            server.should_exit = True
            thread.join(timeout=10)

        return stop_thread, None
    env = {**os.environ, **{f"PACSLABEL_{k.upper()}": str(v) for k, v in {
        "env": settings.env, "var_dir": settings.var_dir, "log_format": settings.log_format,
        "database_url": settings.database_url, "orthanc_url": settings.orthanc_url,
        "orthanc_dicom_port": settings.orthanc_dicom_port, "orthanc_password": settings.secret("orthanc_password"),
        "session_secret": "bench-session", "pseudonym_key": "bench-key", "scp_port": settings.scp_port}.items()}}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "pacslabel.web.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
        env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("the gateway did not start")
        time.sleep(0.1)

    def stop_process() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()

    return stop_process, process.pid


def _session(auth: tuple[str, str] | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.auth = auth
    return session


def _store_series(client: OrthancClient, slices: int) -> tuple[str, str, list[str]]:
    datasets = bench_ct_series(slices)
    started = time.perf_counter()
    for offset in range(0, len(datasets), 25):
        client.store_instances(datasets[offset:offset + 25])
    print(f"stored {len(datasets)} slices of 512x512 in {time.perf_counter() - started:.1f} s")
    return (str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID),
            [str(d.SOPInstanceUID) for d in datasets])


def _give_task(db_url: str, study: str, series: str, count: int) -> None:
    """One more read task of the bench reader, on a new study."""
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        reader = user_repository.get_user_by_name(session, "bench_reader")
        assert reader is not None
        project = session.scalars(select(Project).where(Project.slug == "bench")).one()
        _add_task(session, project, reader, study, series, count)
    engine.dispose()


def _reader_with_task(db_url: str, study: str, series: str, count: int) -> str:
    """The bench reader, their bearer token, the bench project and a read task on the first study."""
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        reader = user_service.create_user(session, "bench_reader", "annotator")
        token = user_service.create_api_token(session, "bench_reader")
        project = Project(slug="bench", name="Bench", definition={}, definition_sha256="0" * 64)
        session.add(project)
        session.flush()
        _add_task(session, project, reader, study, series, count)
    engine.dispose()
    return token


def _add_task(session: Session, project: Project, reader: User, study: str, series: str, count: int) -> None:
    catalogued = catalogue_study(session, study, series, count, pseudonym=f"P-bench-{study[-12:]}", route="bench")
    item = add_study_item(session, project.id, catalogued, [series], split="train", released_at=None,
                          order_key=study[-12:])
    open_task(session, project.id, item.id, reader.id, slot=0)


def _report(results: dict[str, list[dict[str, float]]], frames: int) -> None:
    median: Callable[[str, str], float] = lambda name, key: statistics.median(r[key] for r in results[name])  # noqa: E731
    print(f"\nmedians over {len(results['direct'])} loads ({frames} frames each):")
    for key in ("qido", "metadata", "frames", "total"):
        d, g = median("direct", key), median("gateway", key)
        print(f"  {key:9} direct {d * 1000:8.1f} ms   gateway {g * 1000:8.1f} ms   ratio {g / d:5.2f}")
    for name in ("direct", "gateway"):
        per_frame = "  ".join(f"{key.removeprefix('cpu ')} {median(name, key) * 1000 / frames:5.2f}"
                              for key in results[name][0] if key.startswith("cpu "))
        print(f"  CPU ms per frame during the {name} frames step: {per_frame}")
    fps = frames / median("gateway", "frames")
    ratio = median("gateway", "total") / median("direct", "total")
    print(f"  gateway frames/s: {fps:.0f}")
    print(f"RATIO gateway/direct (total viewer load) = {ratio:.2f}  (target <= 1.10) "
          f"{'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
