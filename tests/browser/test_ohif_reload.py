"""OHIF survives plain reloads in the same window: 8 reloads in a row, each renders the study through the gateway
and hydrates the reader's saved SEG again.

Before the fix in web/ohif_hosting.py (`_SCRIPT_DIR_FALLBACK`) about one reload in four stayed blank: onnxruntime's
emscripten loader in the OHIF dist evaluated `__filename` when a CSS chunk, revalidated over the network, was the
last start-up chunk to arrive (no current <script>), threw a ReferenceError, and OHIF never mounted. Here every
reload must boot, and the one console error that marked the blank page must not appear at all.

Same world as test_reading_in_ohif.py (its `server` fixture: real Orthanc, uvicorn, SQLite, Debian chromium).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from tests.browser.test_reading_in_ohif import (  # noqa: F401 - `server` is the shared fixture
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PAINT_AND_STORE,
    VIEWPORTS_RENDERED,
    Server,
    server,
)
from tests.projects.helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.orthanc, pytest.mark.slow]

RELOADS = 8
SEGMENTATIONS_LOADED = "() => window.services.segmentationService.getSegmentations().length"


def _log_in_and_claim(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    page.get_by_label("User").fill("reader1")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    page.locator("body").press("n")
    page.wait_for_url(re.compile(r"/tasks/\d+$"))


def _hydrate_seg(viewer: Page) -> int:
    """Double-click the SEG thumbnail, wait until the segmentation is loaded and the viewports rendered; returns
    the number of segments OHIF shows for it."""
    thumbnail = viewer.locator("[data-cy^='study-browser-thumbnail']").filter(has_text="SEG").first
    thumbnail.wait_for(timeout=20_000)
    thumbnail.dblclick()
    viewer.wait_for_function(SEGMENTATIONS_LOADED, timeout=30_000, polling=100)
    viewer.wait_for_function(VIEWPORTS_RENDERED, timeout=30_000, polling=100)
    return int(viewer.evaluate("""() => Object.keys(
        window.services.segmentationService.getSegmentations()[0].segments).length"""))


def test_ohif_reloads_eight_times_in_the_same_window_and_shows_the_image_and_the_seg(server: Server) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    base = server.url
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text[:300])

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
        context.set_default_timeout(20_000)
        page = context.new_page()
        _log_in_and_claim(page, base)

        viewer = context.new_page()
        viewer.on("console", on_console)
        viewer.on("pageerror", lambda error: page_errors.append(str(error)[:300]))
        viewer.goto(f"{base}/ohif/segmentation?StudyInstanceUIDs={server.study_uid}")
        viewer.wait_for_function(VIEWPORTS_RENDERED, timeout=45_000, polling=250)
        with viewer.expect_response(lambda r: r.request.method == "POST" and "/studies" in r.url,
                                    timeout=30_000) as stow:
            viewer.evaluate(PAINT_AND_STORE, {"slice": 5, "value": 8, "description": "reload SEG"})
        assert stow.value.status == 200, f"STOW answered {stow.value.status}: {stow.value.text()[:300]}"

        booted: list[bool] = []
        for reload in range(1, RELOADS + 1):
            console_errors.clear()
            viewer.reload()
            try:
                # Short timeouts: a healthy reload of this 12-slice study boots in 1-3 s under SwiftShader.
                viewer.wait_for_function("() => !!window.services", timeout=15_000, polling=100)
                viewer.wait_for_function(VIEWPORTS_RENDERED, timeout=30_000, polling=100)
                booted.append(True)
            except Exception as exc:  # noqa: BLE001 - re-raised with the page's state
                viewer.screenshot(path=str(ARTIFACTS / f"ohif-reload-{reload}-blank.png"))
                root = viewer.evaluate("() => document.getElementById('root')?.innerHTML.length")
                raise AssertionError(f"reload {reload} of {RELOADS}: OHIF did not boot (root element {root} chars, "
                                     f"earlier reloads {booted}); console errors: {console_errors[:5]}; "
                                     f"page errors: {page_errors[-3:]}") from exc
            assert not [e for e in console_errors if "__filename" in e], console_errors
            segments = _hydrate_seg(viewer)
            assert segments == 1, f"reload {reload}: the saved SEG hydrated with {segments} segments"
            # One segmentation, the saved one; its labelmap holds the painted 8x8 square on slice 5 (index 5).
            painted = viewer.evaluate("""() => {
              const seg = window.services.segmentationService.getSegmentations()[0];
              const ids = window.cornerstoneTools.segmentation.state.getSegmentation(seg.segmentationId)
                .representationData.Labelmap.imageIds;
              return ids.map(id => { const img = window.cornerstone.cache.getImage(id);
                if (!img) return -1; let n = 0; const vm = img.voxelManager;
                for (let i = 0; i < img.rows * img.columns; i++) if (vm.getAtIndex(i)) n++; return n; }); }""")
            assert sum(n for n in painted if n > 0) == 64, f"reload {reload}: painted voxels per slice {painted}"
        viewer.screenshot(path=str(ARTIFACTS / "ohif-reload-last.png"))
        browser.close()

    assert booted == [True] * RELOADS
