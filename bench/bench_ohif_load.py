"""OHIF's own `studyToFirstImage` for one CT study, loaded through pacslabel's /dicomweb gateway versus straight
from Orthanc's DICOMweb plugin, alternating in the same run (target ratio gateway/direct <= 1.10).

`studyToFirstImage` is OHIF's timing (3.12: `log.time` in defaultRouteInit when the series-metadata retrieval
starts, `log.timeEnd` in the cornerstone extension's `initViewTiming` on the first non-preRender IMAGE_RENDERED;
OHIF exposes it only as a `console.time`/`console.timeEnd` pair, no performance mark), read from the console line
`studyToFirstImage: 123.4 ms`. `studyToDisplaySetsLoaded` (metadata of all series) is reported alongside.

Both sides run the same OHIF bytes (the /ohif/-patched copy of var/ohif/current/dist that pacslabel serves), the
same mode (`/ohif/<mode>?StudyInstanceUIDs=…`), in the same Chromium (Debian, headless, SwiftShader), each load in a
fresh browser context (cold HTTP cache, as when a reader opens a study for the first time in a session):
- gateway: pacslabel (`uvicorn pacslabel.web.app:create_app`, its own process, as `pacslabel web`) serves OHIF and
  `/dicomweb`; the reader logs in through the form, so every DICOMweb request carries the session cookie and
  passes authentication and the access policy (a reader with a task on the study);
- direct: a plain static file server (`http.server` in its own process, same cache headers and SPA fallback as
  pacslabel) serves the same dist with an app-config whose data source is Orthanc's `/dicom-web` on its own
  port. Nothing on that side passes through pacslabel. The page and Orthanc are different origins and Orthanc
  1.10 sends no CORS headers, so Chromium runs with `--disable-web-security` (for both sides, so the flags are
  equal) and the direct context adds Orthanc's basic auth with `set_extra_http_headers`.
The first load of each side is a warm-up (page cache, pacslabel's cold metadata cache) and is not counted.

Usage: .venv/bin/python bench/bench_ohif_load.py [--runs 7] [--slices 300] [--mode segmentation]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

import requests
from playwright.sync_api import Browser, ConsoleMessage, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.fixtures.orthanc import orthanc_test_settings  # noqa: E402
from tests.fixtures.series import bench_ct_series  # noqa: E402

from bench_gateway import _reader_with_task, _start_gateway, free_port  # noqa: E402
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope  # noqa: E402
from pacslabel.db.migrate import upgrade_to_head  # noqa: E402
from pacslabel.orthanc.client import OrthancClient  # noqa: E402
from pacslabel.orthanc.supervisor import OrthancProcess  # noqa: E402
from pacslabel.users import service as user_service  # noqa: E402
from pacslabel.web.ohif_hosting import OHIF_PREFIX, prepare_ohif_dist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OHIF_DIST = ROOT / "var" / "ohif" / "current" / "dist"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-web-security"]
TIMING = re.compile(r"^(scriptToView|studyToDisplaySetsLoaded|studyToFirstImage|displaySetsToFirstImage"
                    r"|displaySetsToAllImages): ([0-9.]+) ?ms$")
PASSWORD = "bench reader password"
KEYS = ("studyToDisplaySetsLoaded", "studyToFirstImage", "metadata request", "first frame answered",
        "frames answered before first image", "frame request (median)")

# OHIF 3.12.10 starts `studyToFirstImage` (console.time) when the series-metadata retrieval starts and ends it in
# `initViewTiming`'s IMAGE_RENDERED listener at the first event whose `detail.viewportStatus` is not 'preRender'.
# But cornerstone3D's rendering engine copies `viewport.viewportStatus` into the event detail *before* calling
# `viewport.setRendered()` (dist app.bundle, TiledRenderingEngine._renderFlaggedViewports), so the render that
# draws the first image reports 'preRender' and OHIF's timer only ends at the viewport's next render, which a plain
# open of a study never triggers (no timing line at all) and which otherwise measures whatever caused that render.
# This listener ends OHIF's own timer (same console timer, same start) at the render that drew the first image:
# the first IMAGE_RENDERED after which the viewport's status is 'rendered'. OHIF's later timeEnd then only
# finds no timer (a console warning).
END_FIRST_IMAGE_TIMER = """(() => {
  // Where the timer starts and ends on the performance timeline, to relate it to the DICOMweb requests.
  window.__timer = {};
  const time = console.time.bind(console), timeEnd = console.timeEnd.bind(console);
  console.time = key => { window.__timer[key + ':start'] = performance.now(); time(key); };
  console.timeEnd = key => { window.__timer[key + ':end'] = performance.now(); timeEnd(key); };
  const wait = setInterval(() => {
    const cs = window.cornerstone;
    if (!cs?.eventTarget) return;
    clearInterval(wait);
    cs.eventTarget.addEventListener(cs.EVENTS.ELEMENT_ENABLED, enabled => {
      const element = enabled.detail.element;
      const onRendered = () => {
        if (window.__firstImageTimed || cs.getEnabledElement(element)?.viewport?.viewportStatus !== 'rendered') return;
        window.__firstImageTimed = true;
        console.timeEnd('studyToFirstImage');
      };
      element.addEventListener(cs.EVENTS.IMAGE_RENDERED, onRendered);
    });
  }, 2);
})();"""

# What the DICOMweb requests did between the timer's start and the first image (resource timing entries).
REQUESTS_BEFORE_FIRST_IMAGE = """() => {
  const start = window.__timer['studyToFirstImage:start'], end = window.__timer['studyToFirstImage:end'];
  const median = xs => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[s.length >> 1] : NaN; };
  const entries = performance.getEntriesByType('resource').filter(e => /\\/(dicomweb|dicom-web)\\//.test(e.name));
  const frames = entries.filter(e => e.name.endsWith('/frames/1'));
  const metadata = entries.filter(e => e.name.endsWith('/metadata'));
  const doneBefore = frames.filter(e => e.responseEnd <= end);
  return {
    'metadata request': median(metadata.map(e => e.responseEnd - e.startTime)),
    'first frame answered': Math.min(...frames.map(e => e.responseEnd)) - start,
    'frames answered before first image': doneBefore.length,
    'frame request (median)': median(frames.map(e => e.responseEnd - e.startTime)),
  };
}"""

# The direct side's static server: the prepared dist under /ohif/, the same Cache-Control as pacslabel's
# web/ohif_hosting.py, index.html for deep links. Run as `python -c` in its own process.
STATIC_SERVER = textwrap.dedent("""
    import sys
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path
    dist, config, port = Path(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if not path.startswith("/ohif/"):
                self.send_error(404)
                return
            rel = path[len("/ohif/"):]
            if rel == "app-config.js":
                body = config
                self.send_response(200)
                self.send_header("Content-Type", "application/javascript")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not (dist / rel).is_file():
                rel = "index.html"  # SPA fallback, as pacslabel does
            self.path = "/" + rel
            super().do_GET()

        def end_headers(self):
            cache = "public, max-age=31536000, immutable" if ".bundle." in self.path else "no-cache"
            self.send_header("Cache-Control", cache)
            super().end_headers()

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=str(dist))).serve_forever()
""")


@dataclass(frozen=True)
class Side:
    url: str
    login: str | None  # the login form to pass first (gateway: session cookie)
    headers: dict[str, str] | None  # extra request headers (direct: Orthanc's basic auth)


def direct_app_config(orthanc_url: str) -> str:
    """pacslabel's own template, rendered for the direct side: only the DICOMweb roots differ."""
    template = (ROOT / "ohif-config" / "app-config.js.template").read_text()
    return Template(template).substitute(ROUTER_BASENAME=OHIF_PREFIX, DICOMWEB_ROOT=f"{orthanc_url}/dicom-web",
                                         SHOW_STUDY_LIST="false")


def one_load(browser: Browser, url: str, *, login: str | None, headers: dict[str, str] | None,
             timeout_s: float) -> dict[str, float]:
    """Open OHIF on the study in a fresh context; returns OHIF's timings (ms) once studyToFirstImage is logged."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        if headers:
            context.set_extra_http_headers(headers)
        page = context.new_page()
        page.add_init_script(END_FIRST_IMAGE_TIMER)
        timings: dict[str, float] = {}
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if match := TIMING.match(message.text):
                timings.setdefault(match[1], float(match[2]))
            elif message.type == "error":
                errors.append(message.text[:200])

        page.on("console", on_console)
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url[:120]}") if r.status >= 400 else None)
        if login:
            # The login form's POST, as the page sends it; sets the session cookie in this context.
            answer = context.request.post(login, form={"username": "bench_reader", "password": PASSWORD},
                                          max_redirects=0)
            assert answer.status == 303 and context.cookies(), f"login answered {answer.status}"
        page.goto(url)
        deadline = time.monotonic() + timeout_s
        while "studyToFirstImage" not in timings:
            if time.monotonic() > deadline:
                page.screenshot(path=str(ROOT / "test-artifacts" / "bench-ohif-timeout.png"))
                state = page.evaluate("""() => ({vps: (window.cornerstone?.getRenderingEngines?.() || [])
                  .flatMap(e => e.getViewports()).map(v => [v.type, v.viewportStatus]), url: location.href,
                  body: document.body.innerText.slice(0, 300),
                  resources: performance.getEntriesByType('resource').filter(e => !/bundle|css|assets/.test(e.name))
                    .map(e => e.name.slice(0, 140) + ' ' + e.responseStatus).slice(0, 12)})""")
                raise RuntimeError(f"timings {timings}; page state {state}; "
                                   f"no studyToFirstImage after {timeout_s:.0f} s on {url}; "
                                   f"errors {errors[:3]}; failed responses {failed[:5]}")
            page.wait_for_timeout(100)
        timings.update(page.evaluate(REQUESTS_BEFORE_FIRST_IMAGE))
        if failed:
            raise RuntimeError(f"failed responses while loading {url}: {failed[:5]}")
        return timings
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="counted loads per side (after one warm-up each)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--mode", default="segmentation", help="OHIF route, as the worklist opens it")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per load")
    args = parser.parse_args()
    assert (OHIF_DIST / "index.html").is_file(), "scripts/setup.sh installs the OHIF dist"

    with tempfile.TemporaryDirectory(prefix="bench-ohif-") as tmp:
        var = Path(tmp) / "var"
        db_url = f"sqlite:///{Path(tmp) / 'pacslabel.db'}"
        upgrade_to_head(db_url)
        # The tests' managed-Orthanc settings (free ports, a random password); the gateway's secrets as
        # _start_gateway gives them to its process, the service's request timeout.
        settings = orthanc_test_settings(var, database_url=db_url, session_secret="bench-session",
                                         pseudonym_key="bench-key", orthanc_timeout_s=30.0,
                                         orthanc_startup_timeout_s=30.0, ohif_dist_dir=OHIF_DIST)
        # The same prepared copy for both sides: pacslabel finds it already prepared (same digest) under var.
        served = prepare_ohif_dist(OHIF_DIST, var / "ohif-served")
        with (OrthancProcess(settings, grace_period_s=5.0),
              OrthancClient.from_settings(settings) as client):
            datasets = bench_ct_series(args.slices)
            started = time.perf_counter()
            for offset in range(0, len(datasets), 25):
                client.store_instances(datasets[offset:offset + 25])
            print(f"stored {len(datasets)} CT slices of 512x512 in {time.perf_counter() - started:.1f} s")
            study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
            _reader_with_task(db_url, study, series, len(datasets))
            engine = create_db_engine(db_url)
            with session_scope(make_sessionmaker(engine)) as session:
                user_service.set_password(session, "bench_reader", PASSWORD)
            engine.dispose()

            os.environ["PACSLABEL_OHIF_DIST_DIR"] = str(OHIF_DIST)  # inherited by the gateway process
            gateway_port, static_port = free_port(), free_port()
            stop_gateway, _ = _start_gateway(settings, gateway_port, argparse.Namespace(gateway="process", workers=1))
            static = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(served),
                                       direct_app_config(settings.orthanc_url), str(static_port)])
            auth = base64.b64encode(f"pacslabel:{settings.secret('orthanc_password')}".encode()).decode()
            gateway_base, direct_base = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{static_port}"
            path = f"/ohif/{args.mode}?StudyInstanceUIDs={study}"
            sides = {"gateway": Side(gateway_base + path, login=gateway_base + "/login", headers=None),
                     "direct": Side(direct_base + path, login=None, headers={"Authorization": f"Basic {auth}"})}
            try:
                _wait_http(direct_base + "/ohif/index.html")
                results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                    for run in range(args.runs + 1):
                        order = ("gateway", "direct") if run % 2 == 0 else ("direct", "gateway")
                        for name in order:
                            side = sides[name]
                            timings = one_load(browser, side.url, login=side.login, headers=side.headers,
                                               timeout_s=args.timeout)
                            label = "warm-up" if run == 0 else f"run {run}"
                            print(f"{label:8} {name:8} " + "  ".join(f"{k} {timings.get(k, float('nan')):.0f}"
                                                                     for k in KEYS), flush=True)
                            if run:
                                results[name].append(timings)
                    browser.close()
                _report(results, args)
            finally:
                static.terminate()
                static.wait(10)
                stop_gateway()


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.1)


def _report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print("\n(all in ms except the frame count)")
    print(f"medians over {len(results['direct'])} loads per side ({args.slices} slices, /ohif/{args.mode}):")
    for key in KEYS:
        direct = statistics.median(r[key] for r in results["direct"] if key in r)
        gateway = statistics.median(r[key] for r in results["gateway"] if key in r)
        print(f"  {key:36} direct {direct:8.0f}   gateway {gateway:8.0f}   ratio {gateway / direct:5.2f}")
    ratio = (statistics.median(r["studyToFirstImage"] for r in results["gateway"])
             / statistics.median(r["studyToFirstImage"] for r in results["direct"]))
    print(f"RATIO gateway/direct (studyToFirstImage) = {ratio:.2f}  (target <= 1.10) "
          f"{'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
