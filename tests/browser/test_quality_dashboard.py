"""The reader quality dashboard in the real browser: a reviewer logs in through the form, follows the "Quality"
link, and every number the page shows (table cells and chart bars, read from the DOM) equals the JSON API's.

Real pieces: Orthanc (session fixture) holding the world's CTs, SEGs and SRs; uvicorn running
`create_app(settings)` on an ephemeral port; SQLite; Debian chromium through Playwright. The screenshots go to
test-artifacts/ (quality-dashboard.png, quality-dashboard-agreement.png,
quality-dashboard-breakdown.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from pacslabel.db.migrate import upgrade_to_head
from pacslabel.review.quality_reading import FACTS
from pacslabel.web.app import create_app
from tests.fixtures.orthanc import RunningOrthanc, free_port
from tests.fixtures.server import serve
from tests.review.test_quality_world import PASSWORD, QualityWorld, build_world, import_truth

pytestmark = [pytest.mark.browser, pytest.mark.orthanc, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Every number cell of the page, as the server wrote it (data-value is the JSON of the API's value).
READ_CELLS = """() => Array.from(document.querySelectorAll('td[data-metric]')).map(td => ({
  reader: td.dataset.reader, dimension: td.dataset.dimension, group: td.dataset.group, metric: td.dataset.metric,
  value: JSON.parse(td.dataset.value), text: td.textContent.trim()}))"""
READ_CHIPS = """() => Array.from(document.querySelectorAll('section.project-quality [data-key]')).map(e => ({
  project: e.closest('section').dataset.project, split: e.dataset.split, key: e.dataset.key,
  name: e.dataset.name || null, value: JSON.parse(e.dataset.value)}))"""
READ_AGREEMENT = """() => Array.from(document.querySelectorAll('section.project-quality [data-agreement]')).map(e => ({
  kind: e.dataset.agreement, split: e.dataset.split, name: e.dataset.name, stat: e.dataset.stat,
  value: JSON.parse(e.dataset.value), text: e.textContent.trim()}))"""
READ_BARS = """(title) => { const svg = document.querySelector(`svg[aria-label="${title}"]`);
  return svg ? Array.from(svg.querySelectorAll('rect[data-value]')).map(r => Number(r.dataset.value)) : null; }"""


@pytest.fixture
def served(orthanc: RunningOrthanc, tmp_path: Path) -> Iterator[tuple[str, QualityWorld]]:
    db_url = f"sqlite:///{tmp_path / 'pacslabel.db'}"
    upgrade_to_head(db_url)
    FACTS.clear()
    world = build_world(orthanc, db_url, tmp_path / "var")
    import_truth(world)
    port = free_port()
    app = create_app(world.settings.model_copy(update={"web_url": f"http://127.0.0.1:{port}"}))
    with serve(app, port, name="uvicorn-quality") as base:
        yield base, world
        FACTS.clear()


def _api_cells(body: dict[str, Any]) -> dict[tuple[str, str, str, str], Any]:
    cells = {}
    for reader in body["readers"]:
        groups = [("overall", "all", reader["overall"])]
        groups += [(d, g["group"], g) for d in body["dimensions"] for g in reader["breakdowns"][d]]
        for dimension, group, values in groups:
            for metric in body["metric_columns"]:
                cells[(reader["username"], dimension, group, metric)] = values[metric]
    return cells


def test_dashboard_renders_and_its_numbers_equal_the_api(served: tuple[str, QualityWorld]) -> None:
    base, world = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="dark")
        context.set_default_timeout(20_000)
        page = context.new_page()
        errors: list[str] = []
        # Failed loads are caught by URL below (Chromium's console line for them names no URL: favicon.ico).
        page.on("console", lambda m: errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        page.on("response", lambda r: errors.append(f"{r.url} -> {r.status}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)

        page.goto(f"{base}/")
        page.get_by_label("User").fill("rev1")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.get_by_role("link", name="Quality").click()
        page.wait_for_url(f"{base}/quality")
        assert page.get_by_role("heading", name="Reader quality").is_visible()
        assert page.locator("svg.chart").count() >= 7
        page.screenshot(path=str(ARTIFACTS / "quality-dashboard.png"), full_page=True)

        api = page.context.request.get(f"{base}/api/quality/readers")
        assert api.ok, api.text()
        body = api.json()
        wanted = _api_cells(body)
        shown = page.evaluate(READ_CELLS)
        got = {(c["reader"], c["dimension"], c["group"], c["metric"]): c["value"] for c in shown}
        assert got == wanted  # every API number is on the page, and nothing else
        assert len(got) == len(shown) > 100
        # What a person reads matches too: e.g. reader1's median time and Dice against consensus.
        reader1 = body["readers"][0]
        cell = {(c["reader"], c["dimension"], c["group"], c["metric"]): c["text"] for c in shown}
        assert cell[("reader1", "overall", "all", "median_seconds")] == \
            f"{reader1['overall']['median_seconds'] / 60:.1f} min"
        assert cell[("reader1", "overall", "all", "consensus_dice")] == f"{reader1['overall']['consensus_dice']:.3f}"
        # The chart bars carry the same numbers as the tables.
        bars = page.evaluate(READ_BARS, "Agreement with consensus (mean Dice)")
        assert bars == [r["overall"]["consensus_dice"] for r in body["readers"]]
        intra = page.evaluate(READ_BARS, "Intra-rater agreement (mean Dice)")
        assert intra == [r["overall"]["intra_dice"] for r in body["readers"] if r["overall"]["intra_dice"] is not None]

        # Project composition: the chips equal the project API.
        project = page.context.request.get(f"{base}/api/quality/projects/{world.project_id}").json()
        chips = page.evaluate(READ_CHIPS)
        assert chips, "no project composition on the page"
        for chip in chips:
            split = project["splits"][chip["split"]]
            if chip["key"] == "label":
                assert chip["value"] == split["labels"][chip["name"]]["items"], chip
            elif chip["name"] is None:
                assert chip["value"] == split[chip["key"]], chip
            else:
                assert chip["value"] == split[chip["key"]][chip["name"]], chip
        assert {c["name"] for c in chips if c["key"] == "manufacturers"} == {"Siemens", "GE"}

        # Agreement between readers: every cell and chip equals the project API, and every API number is shown.
        agreement = project["agreement"]
        api_agreement: dict[tuple[str, str, str, str], Any] = {}
        for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]:
            for question, numbers in block["questions"].items():
                for stat in ("items_rated", "fleiss_kappa", "fleiss_raters", "fleiss_items", "fleiss_excluded",
                             "krippendorff_alpha"):
                    api_agreement[("question", split, question, stat)] = numbers[stat]
                for answer, n in numbers["answers"].items():
                    api_agreement[("answer", split, question, answer)] = n
            for label, numbers in block["segments"].items():
                for stat, value in (("pairs", numbers["pairs"]), ("hd95_infinite", numbers["hd95_infinite"]),
                                    ("dice_median", numbers["dice"]["median"]), ("dice_iqr", numbers["dice"]["iqr"]),
                                    ("hd95_mm_n", numbers["hd95_mm"]["n"]),
                                    ("hd95_mm_median", numbers["hd95_mm"]["median"]),
                                    ("hd95_mm_iqr", numbers["hd95_mm"]["iqr"])):
                    api_agreement[("segment", split, label, stat)] = value
        agreement_cells = page.evaluate(READ_AGREEMENT)
        page_agreement = {(c["kind"], c["split"], c["name"], c["stat"]): c["value"] for c in agreement_cells}
        assert page_agreement == api_agreement
        assert len(page_agreement) == len(agreement_cells)
        texts = {(c["kind"], c["split"], c["name"], c["stat"]): c["text"] for c in agreement_cells}
        overall = agreement["overall"]["questions"]["lesion_present"]
        assert texts[("question", "all", "lesion_present", "fleiss_kappa")] == f"{overall['fleiss_kappa']:.3f}"
        liver = agreement["overall"]["segments"]["Liver"]
        assert texts[("segment", "all", "Liver", "dice_median")] == f"{liver['dice']['median']:.3f}"
        # The agreement chart's bars are the table's alpha and kappa, in order (undefined ones have no bar).
        bars = page.evaluate(READ_BARS, f"Inter-rater agreement on answers ({world.project_slug}): "
                                        "Krippendorff α, Fleiss κ")
        assert bars == [v for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]
                        for n in block["questions"].values()
                        for v in (n["krippendorff_alpha"], n["fleiss_kappa"]) if v is not None]
        assert -1 / 3 in [pytest.approx(b, abs=1e-12) for b in bars]
        dice = page.evaluate(READ_BARS, f"Pairwise Dice between readers ({world.project_slug}): median")
        assert dice == [n["dice"]["median"] for split, block in [("all", agreement["overall"]),
                                                                 *agreement["splits"].items()]
                        for n in block["segments"].values() if n["pairs"]]
        page.get_by_role("table", name=f"{world.project_slug} answer agreement").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "quality-dashboard-agreement.png"), full_page=True)

        # The per-reader breakdown opens (no script needed) and shows the MR head vs CT head rows.
        page.locator(f"details#reader-{world.users['reader1']} summary").click()
        assert page.get_by_role("table", name="reader1 by modality_body_part").get_by_text("MR HEAD").is_visible()
        page.screenshot(path=str(ARTIFACTS / "quality-dashboard-breakdown.png"), full_page=True)
        assert not errors, errors
        browser.close()
