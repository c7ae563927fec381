"""The reviewer's work in the real browser (issue 5): a reader reads in OHIF, saves twice and submits; a second
reader's read of the same item waits for review too. The reviewer logs in, sees both reads in the review queue
(oldest submission first), presses N, and from the review page
opens *one* read in OHIF: the viewer shows that reader's latest SEG and nothing of the other reader. The
reviewer hydrates it, paints more voxels and saves with OHIF's own store (STOW): the save becomes version 3 of
the *read*, authored by the reviewer, with the reader's version 2 as predecessor (API and database); the
reader's version is still retrievable, unchanged. The reader logs in again: the task page shows what changed
(the numbers equal `/api/tasks/{id}/changes` and an independent count of the painted voxels) and the
reviewer's comment. The reviewer approves the fixed read with the review page's button (R first jumps to the
rejection reason of the read waiting longest); the decision in the database is the approval of the fix. The key
A approves the other read, the item's last: the page shows the consensus, the arbitration task and the final
label the workflow made (the database agrees).

Attribution is the point: two reads wait for review, so the gateway cannot fall back on "the one read waiting";
it must recognise the read from what OHIF sends. The test captures the STOW body and checks what OHIF 3.12
writes when it re-saves a loaded SEG: although OHIF records the loaded version as predecessor, the dataset is a
new series without PredecessorDocumentsSequence, so nothing in it names the read; annotations.service.fix_target
recognises the read by the slices the edit repeats unchanged from the read's latest SEG.

Real pieces: Orthanc (session fixture), uvicorn running `create_app(settings)`, SQLite, Debian chromium through
Playwright. Screenshots in test-artifacts/ (review-queue, review-page, review-viewer-read, review-viewer-fixed,
review-reader-changes, review-page-approved).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page, Request, sync_playwright
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacslabel.annotations.models import AnnotationVersion, task_series_uid
from pacslabel.annotations.service import save_label_array
from pacslabel.audit.models import AuditEvent
from pacslabel.catalog.models import CatalogStudy
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.dicomweb.multipart import parse_multipart_related, related_boundary
from pacslabel.projects.service import sync_project_items
from pacslabel.review.models import ConsensusResult, FinalLabel, ReviewDecision
from pacslabel.settings import Settings
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from pacslabel.users.models import User
from pacslabel.web.app import create_app
from tests.browser.test_reading_in_ohif import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PAINT_AND_STORE,
    SIZE,
    SLICES,
    _ct_series,
    _wait_rendered,
    served_settings,
)
from tests.fixtures.orthanc import RunningOrthanc, dataset_bytes
from tests.fixtures.server import serve
from tests.projects.helpers import PASSWORD, add_series, apply_dict, make_user, project_dict

pytestmark = [pytest.mark.browser, pytest.mark.orthanc, pytest.mark.slow]

COMMENT = "The lesion goes on one more slice; I added it there. Please check."
# The reviewer's edit: a 6x6 square on the nodule on one more slice of the loaded labelmap (nothing there before).
FIX_SLICE, FIX_ROW, FIX_COLUMN, FIX_SIDE = 8, 57, 67, 6

# Paint on the segmentation OHIF hydrated from the read's SEG and store it again with OHIF's own data source;
# no predecessor is passed by the test: generateSegmentation takes the one OHIF recorded when it loaded the SEG.
EDIT_AND_STORE = """async ({slice, row, column, side, description}) => {
  const segService = window.services.segmentationService;
  const segId = segService.getSegmentations()[0].segmentationId;
  const cs = window.cornerstone;
  const seg = window.cornerstoneTools.segmentation.state.getSegmentation(segId);
  const ids = seg.representationData.Labelmap.imageIds;
  await Promise.all(ids.map(id => cs.imageLoader.loadAndCacheImage(cs.cache.getImage(id).referencedImageId)));
  const img = cs.cache.getImage(ids[slice]);
  for (let r = row; r < row + side; r++) {
    for (let c = column; c < column + side; c++) img.voxelManager.setAtIndex(r * img.columns + c, 1);
  }
  window.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(segId);
  const { dataset } = window.commandsManager.runCommand('generateSegmentation',
    { segmentationId: segId, options: { SeriesDescription: description } }, 'SEGMENTATION');
  await window.extensionManager.getActiveDataSource()[0].store.dicom(dataset);
  return { predecessor: seg.predecessorImageId || segService.getSegmentation(segId).predecessorImageId || null };
}"""

# Painted voxels of the loaded segmentation, per labelmap slice.
PAINTED = """() => { const seg = window.services.segmentationService.getSegmentations()[0];
  const ids = window.cornerstoneTools.segmentation.state.getSegmentation(seg.segmentationId)
    .representationData.Labelmap.imageIds;
  return ids.map(id => { const img = window.cornerstone.cache.getImage(id); if (!img) return -1;
    let n = 0; const vm = img.voxelManager;
    for (let i = 0; i < img.rows * img.columns; i++) if (vm.getAtIndex(i)) n++; return n; }); }"""

DISPLAY_SETS = """() => window.services.displaySetService.getActiveDisplaySets().map(d => ({
  modality: d.Modality, series: d.SeriesInstanceUID, sop: d.SOPInstanceUID || null}))"""


@dataclass(frozen=True)
class World:
    url: str
    settings: Settings
    db_url: str
    study_uid: str
    source_series_uid: str
    other_read_id: int  # reader2's submitted read of the same item
    other_voxels: int


def _log_in(context: BrowserContext, base: str, username: str) -> Page:
    page = context.new_page()
    page.goto(f"{base}/")
    assert page.url.endswith("/login")
    page.get_by_label("User").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    return page


@pytest.fixture
def world(orthanc: RunningOrthanc, tmp_path: Path) -> Iterator[World]:
    """Two readers (annotators) and one reviewer on a one-item project whose reads are all reviewed; reader2
    has already read the item through the API (a known square) and submitted."""
    db_url, port, settings = served_settings(orthanc, tmp_path)
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        for name in ("reader1", "reader2"):
            make_user(session, name)
        make_user(session, "rev1", "reviewer")
        series = add_series(session, "PSEUDO-REVIEW", "ct-review", "axial", route="ct-review", modality="CT",
                            body_part="CHEST", manufacturer=None, description="synthetic chest CT", instances=SLICES)
        study_uid = session.scalar(select(CatalogStudy.study_instance_uid).where(CatalogStudy.id == series.study_id))
        assert study_uid is not None
        source_series_uid = series.series_instance_uid
        for ds in _ct_series(study_uid, source_series_uid):
            orthanc.client.store_instance(dataset_bytes(ds))
        project = apply_dict(session, project_dict(
            slug="review-e2e", name="Lung nodules (review e2e)",
            selection={"item": "study", "routes": ["ct-review"], "modalities": ["CT"]},
            readers={"roles": ["annotator"]}, reviewers={"roles": ["reviewer"]},
            readers_per_split={"train": 2, "validation": 2, "test": 2},
            review={"fractions": {"train": 1.0, "validation": 1.0, "test": 1.0}}))
        sync_project_items(session, project)
        reader2 = session.scalar(select(User).where(User.username == "reader2"))
        assert reader2 is not None
        read2 = task_service.claim_next_task(session, reader2)
        assert read2 is not None and read2.purpose == "read"
        session.commit()
        labels = np.zeros((SLICES, SIZE, SIZE), np.uint8)
        labels[3, 20:30, 20:30] = 1  # reader2's lesion: 100 voxels on one slice
        buffer = io.BytesIO()
        np.save(buffer, labels)
        save_label_array(session, orthanc.client, reader2, read2, buffer.getvalue(), {"1": "lesion"})
        task_service.submit_task(session, read2, reader2)
        other_read_id = read2.id
    engine.dispose()

    with serve(create_app(settings), port, name="uvicorn-review-e2e") as base:
        yield World(base, settings, db_url, study_uid, source_series_uid, other_read_id, 100)


def _stow_datasets(request: Request) -> list[Dataset]:
    """The instances of a captured STOW request, as OHIF sent them."""
    body = request.post_data_buffer
    assert body, "the STOW request had no body"
    boundary = related_boundary(request.headers.get("content-type"))
    return [dcmread(io.BytesIO(part.content)) for part in parse_multipart_related(body, boundary)]


def _predecessors(dataset: Dataset) -> list[tuple[str, str]]:
    """(series, SOP instance) pairs named in PredecessorDocumentsSequence."""
    return [(str(series.SeriesInstanceUID), str(sop.ReferencedSOPInstanceUID))
            for study in dataset.get("PredecessorDocumentsSequence", [])
            for series in study.get("ReferencedSeriesSequence", [])
            for sop in series.get("ReferencedSOPSequence", [])]


def _get(page: Page, url: str) -> Any:
    response = page.context.request.get(url)
    assert response.ok, f"GET {url} -> {response.status} {response.text()[:300]}"
    return response.json()


def test_reviewer_fixes_a_read_in_ohif_and_the_reader_sees_what_changed(world: World) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    base = world.url
    errors: list[str] = []
    started = time.monotonic()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

        # --- the reader reads: N, open in viewer, paint and save twice (v1, v2), submit ------------------------
        reader_context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
        reader_context.set_default_timeout(20_000)
        page = _log_in(reader_context, base, "reader1")
        page.locator("body").press("n")
        page.wait_for_url(re.compile(r"/tasks/\d+$"))
        read_id = int(page.url.rsplit("/", 1)[1])
        assert read_id != world.other_read_id
        with reader_context.expect_page() as popup:
            page.get_by_role("link", name=re.compile("Open in viewer")).click()
        viewer = popup.value
        viewer.on("response", lambda r: errors.append(f"{r.request.method} {r.url} -> {r.status}")
                  if r.status >= 400 else None)
        _wait_rendered(viewer, "review-reader", errors)
        for number, (slice_index, side) in enumerate(((5, 8), (6, 12)), start=1):
            with viewer.expect_response(lambda r: r.request.method == "POST" and "/studies" in r.url,
                                        timeout=30_000) as stow:
                viewer.evaluate(PAINT_AND_STORE, {"slice": slice_index, "value": side, "description": "reader SEG"})
            assert stow.value.status == 200, f"reader save {number}: {stow.value.status} {stow.value.text()[:300]}"
        viewer.close()
        reader_versions = [v for v in _get(page, f"{base}/api/tasks/{read_id}/annotations")["versions"]
                           if v["modality"] == "SEG"]
        assert [(v["version"], v["author_role"]) for v in reader_versions] == [(1, "annotator"), (2, "annotator")]
        reader_latest = reader_versions[-1]
        reader_voxels = 8 * 8 + 12 * 12  # the two squares, on two slices
        page.reload()
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=re.compile("Submit")).click()
        page.wait_for_url(re.compile(rf"/\?done={read_id}$"))
        reader_context.close()

        # --- the reviewer: N gives the review; the review page links each read into OHIF ---------------------
        reviewer_context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
        reviewer_context.set_default_timeout(20_000)
        review_page = _log_in(reviewer_context, base, "rev1")
        # The review queue: both submitted reads, oldest submission first (reader2's, then reader1's).
        review_page.get_by_role("link", name="Review", exact=True).click()
        review_page.wait_for_url(f"{base}/review")
        queued = review_page.locator("#review-queue tbody tr")
        assert [queued.nth(i).get_attribute("data-read") for i in range(queued.count())] == [
            str(world.other_read_id), str(read_id)]
        assert queued.nth(1).locator("td.reader").inner_text() == "reader1"
        assert queued.nth(1).locator("td.versions").inner_text().startswith("2")
        review_page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)
        review_page.goto(f"{base}/")
        review_page.locator("body").press("n")
        review_page.wait_for_url(re.compile(r"/tasks/\d+$"))
        review_id = int(review_page.url.rsplit("/", 1)[1])
        assert review_id not in (read_id, world.other_read_id)
        read_series = task_series_uid(world.study_uid, read_id, "SEG")
        other_series = task_series_uid(world.study_uid, world.other_read_id, "SEG")
        link = review_page.get_by_role("link", name=f"Open read #{read_id} in viewer")
        assert link.get_attribute("href") == (f"/ohif/segmentation?StudyInstanceUIDs={world.study_uid}"
                                              f"&SeriesInstanceUIDs={world.source_series_uid},{read_series}")
        assert review_page.get_by_role("link", name=f"Open read #{world.other_read_id} in viewer").is_visible()
        review_page.screenshot(path=str(ARTIFACTS / "review-page.png"), full_page=True)

        gateway_urls: list[str] = []
        with reviewer_context.expect_page() as popup:
            link.click()
        viewer = popup.value
        viewer.on("request", lambda r: gateway_urls.append(r.url) if "/dicomweb/" in r.url else None)
        viewer.on("response", lambda r: errors.append(f"{r.request.method} {r.url} -> {r.status}")
                  if r.status >= 400 else None)
        _wait_rendered(viewer, "review-open", errors)
        thumbnail = viewer.locator("[data-cy^='study-browser-thumbnail']").filter(has_text="SEG")
        thumbnail.first.wait_for(timeout=20_000)
        assert thumbnail.count() == 1, "the reviewer's viewer shows one SEG: this read's"
        shown = viewer.evaluate(DISPLAY_SETS)
        segs = [d for d in shown if d["modality"] == "SEG"]
        assert segs == [{"modality": "SEG", "series": read_series, "sop": reader_latest["sop_instance_uid"]}], shown
        assert not [u for u in gateway_urls if other_series in u], "the viewer asked for the other reader's SEG"
        thumbnail.first.dblclick()
        viewer.wait_for_function("() => window.services.segmentationService.getSegmentations().length > 0",
                                 timeout=30_000, polling=250)
        _wait_rendered(viewer, "review-hydrated", errors)
        painted = viewer.evaluate(PAINTED)
        assert sum(n for n in painted if n > 0) == reader_voxels, f"hydrated voxels per slice: {painted}"
        assert painted[FIX_SLICE] == 0, painted
        viewer.wait_for_timeout(300)
        viewer.screenshot(path=str(ARTIFACTS / "review-viewer-read.png"))

        # --- the reviewer paints more and saves with OHIF's own STOW; the body is captured -------------------
        stow_answers: list[str] = []
        stow_requests: list[Request] = []
        viewer.on("request", lambda r: stow_requests.append(r)
                  if r.method == "POST" and "/studies" in r.url else None)
        viewer.on("response", lambda r: stow_answers.append(f"{r.status} {r.text()[:800]}")
                  if r.request.method == "POST" and "/studies" in r.url else None)
        with viewer.expect_response(lambda r: r.request.method == "POST" and "/studies" in r.url,
                                    timeout=30_000) as stow:
            try:
                edit = viewer.evaluate(EDIT_AND_STORE, {"slice": FIX_SLICE, "row": FIX_ROW, "column": FIX_COLUMN,
                                                        "side": FIX_SIDE, "description": "reviewer fix"})
            except Exception as exc:  # noqa: BLE001 - re-raised with the gateway's STOW answer
                viewer.wait_for_timeout(500)
                for request in stow_requests:
                    sent_parts = _stow_datasets(request)
                    sent_parts[0].save_as(str(ARTIFACTS / "review-stow-sent.dcm"), enforce_file_format=True)
                raise AssertionError(f"the reviewer's save failed: {exc}; STOW answers {stow_answers}") from exc
        assert stow.value.status == 200, f"reviewer STOW answered {stow.value.status}: {stow.value.text()[:500]}"
        [sent] = _stow_datasets(stow.value.request)
        # What OHIF 3.12.10 sends for an edited, re-loaded SEG: it recorded the loaded version as predecessor,
        # yet the dataset is a NEW series with no PredecessorDocumentsSequence (generateSegmentation assigns
        # the predecessor to the derivation object, not to its dataset). Nothing in it names the read; with two
        # reads waiting, annotations.service.fix_target finds the read whose latest SEG it repeats unchanged
        # on the slices the reviewer did not touch (here the reader's two slices; reader2's slice differs).
        assert edit["predecessor"] and reader_latest["sop_instance_uid"] in edit["predecessor"], edit
        assert str(sent.StudyInstanceUID) == world.study_uid
        assert [str(r.SeriesInstanceUID) for r in sent.ReferencedSeriesSequence] == [world.source_series_uid]
        assert str(sent.SeriesInstanceUID) not in (read_series, other_series), (
            "OHIF now writes into the read's series: fix_target finds the read by it")
        assert "PredecessorDocumentsSequence" not in sent, (
            f"OHIF now names the predecessor {_predecessors(sent)}: fix_target finds the read by it")
        assert str(sent.SOPInstanceUID) != reader_latest["sop_instance_uid"]
        answer = stow.value.json()
        [stored] = answer["00081199"]["Value"]
        fix_sop = stored["00081155"]["Value"][0]
        assert f"/series/{read_series}/instances/{fix_sop}" in stored["00081190"]["Value"][0]
        # Show the slice the reviewer painted for the screenshot.
        viewer.evaluate("""(slice) => window.cornerstone.getRenderingEngines()[0].getViewports()[0]
          .setImageIdIndex(slice)""", FIX_SLICE)
        _wait_rendered(viewer, "review-fixed", errors)
        viewer.wait_for_timeout(300)
        viewer.screenshot(path=str(ARTIFACTS / "review-viewer-fixed.png"))
        viewer.close()

        # The reviewer leaves a comment on the read's thread from the review page.
        review_page.reload()
        thread = review_page.locator("section", has=review_page.locator(f"#thread-{read_id}"))
        thread.get_by_label("Comment for the reader").fill(COMMENT)
        thread.get_by_role("button", name="Post comment").click()
        review_page.wait_for_url(re.compile(rf"/tasks/{review_id}\?saved=comment"))
        assert review_page.get_by_text(COMMENT).is_visible()

        # The API: the fix is version 3 of the read, by the reviewer, against the reader's version 2.
        changes = _get(review_page, f"{base}/api/tasks/{read_id}/changes")
        [fix] = changes["fixes"]
        assert (fix["version"], fix["author"], fix["author_role"], fix["predecessor_version"],
                fix["sop_instance_uid"], fix["predecessor_sop_instance_uid"]) == (
            3, "rev1", "reviewer", 2, fix_sop, reader_latest["sop_instance_uid"])
        [label] = fix["labels"]
        added = FIX_SIDE * FIX_SIDE
        assert (label["name"], label["added_voxels"], label["removed_voxels"], label["voxels_before"],
                label["voxels_after"], len(label["slices_touched"])) == ("lesion", added, 0, reader_voxels,
                                                                         reader_voxels + added, 1)
        assert label["dice"] == pytest.approx(2 * reader_voxels / (2 * reader_voxels + added))
        assert _get(review_page, f"{base}/api/tasks/{review_id}/annotations")["versions"] == []

        # --- the reader's version is still retrievable, unchanged; the reader sees the fix and the comment ---
        reader_context = browser.new_context(viewport={"width": 1440, "height": 1400}, color_scheme="dark")
        reader_context.set_default_timeout(20_000)
        page = _log_in(reader_context, base, "reader1")
        metadata = _get(page, f"{base}/dicomweb/studies/{world.study_uid}/series/{read_series}/instances/"
                              f"{reader_latest['sop_instance_uid']}/metadata")
        assert metadata[0]["00080018"]["Value"] == [reader_latest["sop_instance_uid"]]
        instance = page.context.request.get(
            f"{base}/dicomweb/studies/{world.study_uid}/series/{read_series}/instances/"
            f"{reader_latest['sop_instance_uid']}",
            headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert instance.ok, f"reader's version 2 -> {instance.status}"
        [part] = parse_multipart_related(instance.body(), related_boundary(instance.headers["content-type"]))
        retrieved = dcmread(io.BytesIO(part.content))
        assert str(retrieved.SOPInstanceUID) == reader_latest["sop_instance_uid"]
        assert str(retrieved.ContentCreatorName) == "reader1"
        frames = np.asarray(retrieved.pixel_array).reshape(-1, SIZE, SIZE)
        assert int(frames.astype(bool).sum()) == reader_voxels  # the reader's pixels, untouched by the fix

        page.goto(f"{base}/tasks/{read_id}")
        api_changes = _get(page, f"{base}/api/tasks/{read_id}/changes")
        assert api_changes == changes
        assert page.get_by_role("heading", name="What the reviewer changed").is_visible()
        assert page.get_by_role("heading", name=re.compile(r"v2 → v3")).is_visible()
        row = page.locator("table.fix-changes tr[data-label='1']")
        shown_row = {cell: row.locator(f"td.{cell}").inner_text().strip()
                     for cell in ("added", "removed", "dice", "slices")}
        assert shown_row == {"added": str(label["added_voxels"]), "removed": str(label["removed_voxels"]),
                             "dice": f"{label['dice']:.3f}",
                             "slices": str(label["slices_touched"][0] + 1)}, shown_row
        comments = page.locator("#comment-list li")
        assert comments.count() == 1
        assert "rev1" in comments.first.inner_text() and COMMENT in comments.first.inner_text()
        version_rows = page.locator("#versions tbody tr")
        assert [version_rows.nth(i).locator("td").nth(4).inner_text() for i in range(version_rows.count())] == [
            "annotator", "annotator", "reviewer"]
        page.screenshot(path=str(ARTIFACTS / "review-reader-changes.png"), full_page=True)

        # --- the reviewer approves the fixed read with the review page's button --------------------------------
        review_page.goto(f"{base}/tasks/{review_id}")
        # R takes the reviewer to the reason of the first read waiting for a decision (reader2's, slot 0).
        review_page.locator("body").press("r")
        assert review_page.evaluate("document.activeElement.id") == f"reject-reason-{world.other_read_id}"
        review_page.locator("body").click(position={"x": 5, "y": 5})  # leave the field: keys act again
        review_page.once("dialog", lambda dialog: dialog.accept())  # "Approve read #…?"
        review_page.get_by_role("button", name=f"Approve read #{read_id}").click()
        review_page.wait_for_url(re.compile(rf"/tasks/{review_id}\?saved=approved&read={read_id}"))
        assert review_page.get_by_text(f"Read #{read_id} approved.").is_visible()
        assert review_page.locator("#outcome .approved-count").inner_text() == "1 of 2"
        assert review_page.get_by_role("button", name=f"Approve read #{read_id}").count() == 0
        assert review_page.get_by_role("button", name=f"Approve read #{world.other_read_id}").is_visible()
        # A approves the read waiting on the page (reader2's), the item's last: the page shows what the workflow
        # made of it (two reads that do not overlap: consensus, below the threshold, so one arbitration task).
        review_page.once("dialog", lambda dialog: dialog.accept())
        review_page.locator("body").press("a")
        review_page.wait_for_url(re.compile(rf"/tasks/{review_id}\?saved=approved&read={world.other_read_id}"))
        outcome = review_page.locator("#outcome")
        assert outcome.locator(".approved-count").inner_text() == "2 of 2"
        assert review_page.locator(".approve-form").count() == 0
        review_page.screenshot(path=str(ARTIFACTS / "review-page-approved.png"), full_page=True)
        shown_outcome = " ".join(outcome.inner_text().split())
        page.reload()
        assert page.locator("#decisions").get_by_text("approve").is_visible()
        browser.close()

    # --- the database agrees: attribution, link to the reader's version, audit ---------------------------------
    engine = create_db_engine(world.db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        users = {u.username: u.id for u in session.scalars(select(User))}
        rows = list(session.scalars(select(AnnotationVersion).where(AnnotationVersion.task_id == read_id)
                                    .order_by(AnnotationVersion.version)))
        assert [(r.version, r.author_id, r.author_role, r.series_instance_uid) for r in rows] == [
            (1, users["reader1"], "annotator", read_series), (2, users["reader1"], "annotator", read_series),
            (3, users["rev1"], "reviewer", read_series)]
        assert rows[2].predecessor_id == rows[1].id and rows[1].predecessor_id == rows[0].id
        assert rows[2].sop_instance_uid == fix_sop and rows[2].origin == "ohif"
        assert not list(session.scalars(select(AnnotationVersion).where(AnnotationVersion.task_id == review_id)))
        other = list(session.scalars(select(AnnotationVersion).where(
            AnnotationVersion.task_id == world.other_read_id)))
        assert [(r.version, r.author_id) for r in other] == [(1, users["reader2"])]  # the other read untouched
        [event] = [e for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "annotation_save",
                                                                       AuditEvent.object_id == str(read_id)))
                   if (e.detail or {}).get("version") == 3]
        assert event.actor == "rev1" and event.detail is not None
        assert event.detail["fix_by_review_task"] == review_id and event.detail["predecessor_id"] == rows[1].id
        read = session.get(Task, read_id)
        assert read is not None and read.status == "done"
        [result] = session.scalars(select(ConsensusResult)).all()
        [arbitration] = session.scalars(select(Task).where(Task.purpose == "arbitration")).all()
        final = session.scalar(select(FinalLabel))
        assert final is not None and (final.source, final.consensus_id) == ("consensus", result.id)
        assert result.min_dice == 0.0  # reader2's square and reader1's squares share no voxel
        assert (f"lowest pairwise Dice {result.min_dice:.3f}, below the project's threshold" in shown_outcome
                and f"Arbitration task #{arbitration.id} created for rev1 (open)" in shown_outcome
                and "Final label: consensus" in shown_outcome), shown_outcome
        [decision] = session.scalars(select(ReviewDecision).where(ReviewDecision.task_id == read_id)).all()
        assert (decision.decision, decision.reviewer_id, decision.annotation_version_id) == (
            "approve", users["rev1"], rows[2].id)  # the reviewer's fix is what was approved
    engine.dispose()
    print(f"\nreview in OHIF, whole browser test {time.monotonic() - started:.1f} s")
