"""Which read a reviewer's save fixes, when the save names no read.

OHIF 3.12.10 writes an edited, re-loaded SEG into a new series with no PredecessorDocumentsSequence (captured in
tests/browser/test_review_in_ohif.py), so with several reads waiting for review `fix_target` recognises the read
by the drawn slices the save repeats bit for bit from that read's latest SEG. Here on a real Orthanc and database
(SQLite and PostgreSQL), through the real STOW door, with known masks: reader1 and reader2 agree well (foreground
Dice 0.93), so a reviewer's edit of reader1's read overlaps reader2's almost as much as reader1's; the unchanged
slices still tell them apart. A save that repeats no read, or two reads equally, is refused with a 422-class STOW
failure that says so, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from sqlalchemy import select

from pacslabel.annotations import repository as annotation_repository
from pacslabel.annotations.models import AnnotationVersion, task_series_uid
from pacslabel.annotations.seg_building import build_segmentation, segment_specs_from_mapping
from pacslabel.annotations.service import protocol_labels, unchanged_slices
from pacslabel.db import session_scope
from pacslabel.dicomweb.multipart import encode_multipart_related
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from tests.annotations.test_versions_env import part10
from tests.fixtures.worlds import user_named
from tests.review.test_workflow import (  # noqa: F401 - `review_env` is the shared fixture
    READERS,
    SEGMENTS,
    ReviewEnv,
    masks,
    review_env,
    save_and_submit,
)

FAILURE_REASON = "00081197"
REASON_TEXT = "00091001"


def test_unchanged_slices_counts_drawn_slices_that_are_identical() -> None:
    a = np.zeros((5, 4, 4), bool)
    b = np.zeros((5, 4, 4), bool)
    a[0, 1, 1] = b[0, 1, 1] = True  # drawn in both, identical
    a[1, 0, 0] = True  # drawn in a only
    a[2, 2, 2] = b[2, 2, 2] = True
    b[2, 3, 3] = True  # drawn in both, one voxel differs
    # slices 3 and 4: empty in both -> not counted (nothing drawn to compare)
    assert unchanged_slices(a, b) == 1
    assert unchanged_slices(a, a) == 3  # slices 0, 1 and 2 are drawn
    assert unchanged_slices(np.zeros_like(a), np.zeros_like(a)) == 0


def _foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    return 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum()))


def _ohif_like_stow(env: ReviewEnv, labels: np.ndarray) -> tuple[int, dict[str, Any]]:
    """A SEG as OHIF 3.12 re-saves an edited one: a fresh series, no predecessor, references the source only."""
    with session_scope(env.sessions) as session:
        task = session.get(Task, env.tasks["reader1"])
        assert task is not None
        specs = segment_specs_from_mapping(SEGMENTS, protocol_labels(annotation_repository.protocol_of(session, task)))
    seg = build_segmentation(labels, env.source, specs, series_instance_uid=str(hd.UID()), series_number=99,
                             instance_number=1, author="rev1")
    assert "PredecessorDocumentsSequence" not in seg
    body, header = encode_multipart_related([part10(seg)])
    response = env.client.post(f"/dicomweb/studies/{env.study_uid}", content=body,
                               headers={**env.headers["rev1"], "Content-Type": header})
    return response.status_code, response.json()


def _versions(env: ReviewEnv) -> dict[str, list[tuple[int, str]]]:
    with session_scope(env.sessions) as session:
        return {reader: [(v.version, v.author_role) for v in session.scalars(
            select(AnnotationVersion).where(AnnotationVersion.task_id == env.tasks[reader])
            .order_by(AnnotationVersion.version))] for reader in READERS}


def test_an_ohif_resave_that_names_no_read_fixes_the_read_it_repeats_unchanged(
        review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    first = {reader: save_and_submit(env, reader, known[reader]) for reader in READERS}
    with session_scope(env.sessions) as session:
        review = task_service.claim_next_task(session, user_named(session, "rev1"))
        assert review is not None and review.purpose == "review"
        review_id = review.id

    # The reviewer's edit of reader1's read: the liver goes on one more slice (slice 9).
    edited = known["reader1"].copy()
    edited[9, 20:50, 20:50] = 3
    # Overlap alone could not decide: the edit is nearly as close to reader2's read as to reader1's.
    assert _foreground_dice(edited, known["reader1"]) == 2 * 6300 / (7200 + 6300)
    assert _foreground_dice(edited, known["reader2"]) == 2 * 5880 / (7200 + 6300)
    # The unchanged slices do: slices 2-8 of reader1's read come back bit for bit, none of the others'.
    assert [unchanged_slices(edited != 0, known[r] != 0) for r in READERS] == [7, 0, 0]

    status, answer = _ohif_like_stow(env, edited)
    assert status == 200, answer
    assert _versions(env) == {"reader1": [(1, "annotator"), (2, "reviewer")], "reader2": [(1, "annotator")],
                              "reader3": [(1, "annotator")]}
    [stored] = answer["00081199"]["Value"]
    with session_scope(env.sessions) as session:
        fix = annotation_repository.latest_version(session, env.tasks["reader1"], "SEG")
        assert fix is not None
        assert (fix.author_id, fix.author_role, fix.predecessor_id, fix.sop_instance_uid, fix.series_instance_uid) == (
            user_named(session, "rev1").id, "reviewer", first["reader1"], stored["00081155"]["Value"][0],
            task_series_uid(env.study_uid, env.tasks["reader1"], "SEG"))
        assert annotation_repository.latest_version(session, review_id, "SEG") is None

    # What changed, for reader1: exactly the slice the reviewer added.
    changes = env.client.get(f"/api/tasks/{env.tasks['reader1']}/changes", headers=env.headers["reader1"])
    assert changes.status_code == 200, changes.text
    [entry] = changes.json()["fixes"]
    liver = next(label for label in entry["labels"] if label["label"] == 3)
    assert (liver["added_voxels"], liver["removed_voxels"], liver["slices_touched"]) == (900, 0, [9])


def test_a_save_that_repeats_no_read_or_two_reads_equally_is_refused_and_nothing_is_stored(
        review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    for reader in READERS:
        save_and_submit(env, reader, known[reader])
    with session_scope(env.sessions) as session:
        assert task_service.claim_next_task(session, user_named(session, "rev1")) is not None
    before = _versions(env)
    r1, r2, r3 = (env.tasks[r] for r in READERS)

    # Drawn from scratch: reader1's mask moved one row -- no drawn slice is any read's.
    shifted = np.roll(known["reader1"], 1, axis=1)
    status, answer = _ohif_like_stow(env, shifted)
    [failed] = answer["00081198"]["Value"]
    reason = failed[REASON_TEXT]["Value"][0]
    assert status == 409 and failed[FAILURE_REASON]["Value"] == [0xA900], answer
    assert "say which read the fix is for" in reason
    assert f"identical to task {r1}: 0, task {r2}: 0, task {r3}: 0" in reason

    # Two slices from reader1's read and two from reader2's: a tie, refused rather than guessed.
    mixed = np.zeros_like(known["reader1"])
    mixed[2:4] = known["reader1"][2:4]
    mixed[4:6] = known["reader2"][4:6]
    status, answer = _ohif_like_stow(env, mixed)
    [failed] = answer["00081198"]["Value"]
    assert status == 409 and f"identical to task {r1}: 2, task {r2}: 2, task {r3}: 0" in failed[REASON_TEXT]["Value"][0]

    assert _versions(env) == before
