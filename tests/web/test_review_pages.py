"""The reviewer's pages on a real Orthanc and database (the review world of tests/review/test_workflow.py: three
readers save SEGs of known masks on one validation item, rev1 reviews): the queue lists the submitted reads
oldest submission first with reader, versions and note; approve and reject through the page forms change
exactly what the JSON API changes (task state, decision rows, audit); the reader's returned read shows the
reason and comment first; the last approval shows the consensus, the arbitration task and the final label the
workflow made; the arbitration page submits the arbiter's SEG (409 page without one). Hostile input: a reason
outside the protocol is a 400 page naming the allowed reasons, a reader posting a review form gets 403, and a
cross-site post (no session cookie under SameSite=Lax) is sent to the login page with nothing changed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from pacslabel.audit.models import AuditEvent
from pacslabel.db import session_scope
from pacslabel.review import repository
from pacslabel.review.models import ReviewDecision
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose
from tests.fixtures.worlds import PASSWORD, save_labels, user_named
from tests.review.test_workflow import (  # noqa: F401 - review_env is a fixture
    READERS,
    SEGMENTS,
    THRESHOLD,
    ReviewEnv,
    approve_all_reads,
    masks,
    review_env,
    save_and_submit,
)

NOTE = "Is the lesion on slice 5 real?"
COMMENT = "The lesion is labelled as a cyst on slices 4-6."


def _rows(html: str) -> list[dict[str, str]]:
    """The review queue's rows: read id, reader, versions cell and note cell, in page order."""
    rows = []
    for match in re.finditer(r'<tr data-read="(\d+)">(.*?)</tr>', html, re.S):
        cells = dict(re.findall(r'<td class="(\w+)">(.*?)</td>', match[2], re.S))
        rows.append({"read": match[1], "reader": cells["reader"].strip(),
                     "versions": re.sub(r"<[^>]+>", "", cells["versions"]).strip(),
                     "note": re.sub(r"<[^>]+>", "", cells["note"]).strip()})
    return rows


def _state(env: ReviewEnv, read_id: int) -> dict[str, Any]:
    """What a decision changed on a read: its status, its decision rows and rev1's audit trail on it."""
    with session_scope(env.sessions) as session:
        task = session.get(Task, read_id)
        assert task is not None
        latest = repository.latest_seg(session, read_id)
        decisions = [(d.decision, d.reason, d.comment, d.annotation_version_id == (latest.id if latest else None),
                      d.reviewer_id == user_named(session, "rev1").id)
                     for d in session.scalars(select(ReviewDecision).where(ReviewDecision.task_id == read_id)
                                              .order_by(ReviewDecision.id))]
        audit = [e.action for e in session.scalars(select(AuditEvent).where(
            AuditEvent.actor == "rev1", AuditEvent.object_type == "task", AuditEvent.object_id == str(read_id))
            .order_by(AuditEvent.id))]
        return {"status": task.status, "decisions": decisions, "audit": audit}


def _claim(env: ReviewEnv, username: str) -> Task:
    with session_scope(env.sessions) as session:
        task = task_service.claim_next_task(session, user_named(session, username))
        assert task is not None
        session.expunge(task)
        return task


def test_the_queue_lists_submitted_reads_oldest_first(review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    r1, r2, r3 = (env.tasks[r] for r in READERS)
    # reader2 saves twice and submits first; reader1 submits later with a question; reader3 is still reading.
    with session_scope(env.sessions) as session:
        save_labels(session, env.orthanc, "reader2", r2, known["reader2"], SEGMENTS)
    save_and_submit(env, "reader2", known["reader2"])
    save_and_submit(env, "reader1", known["reader1"], note=NOTE)

    page = env.client.get("/review", headers=env.headers["rev1"])
    assert page.status_code == 200, page.text
    assert [(r["read"], r["reader"], r["versions"], r["note"]) for r in _rows(page.text)] == [
        (str(r2), "reader2", "2 (SEG v2)", "—"), (str(r1), "reader1", "1 (SEG v1)", NOTE)]
    api = env.client.get("/api/review/queue", headers=env.headers["rev1"]).json()["reads"]
    assert [str(r["task_id"]) for r in api] == [r["read"] for r in _rows(page.text)]  # the API's order
    assert f'href="/review/reads/{r2}"' in page.text and 'href="/review" aria-current="page"' in page.text
    assert str(r3) not in [r["read"] for r in _rows(page.text)]
    # An admin reviews every project: the same queue; a reader has no queue.
    admin = env.client.get("/review", headers=env.headers["admin1"])
    assert [r["read"] for r in _rows(admin.text)] == [str(r2), str(r1)]
    assert env.client.get("/review", headers=env.headers["reader3"]).status_code == 403
    assert 'href="/review"' not in env.client.get("/", headers=env.headers["reader3"]).text

    # "Next review": the oldest read, opened on its own (rev1 holds no review task on the item yet).
    nxt = env.client.post("/review/next", headers=env.headers["rev1"], follow_redirects=False)
    assert nxt.status_code == 303 and nxt.headers["location"] == f"/review/reads/{r2}#read-{r2}"
    read_page = env.client.get(f"/review/reads/{r2}", headers=env.headers["rev1"])
    assert read_page.status_code == 200
    assert f"Review of read #{r2}" in read_page.text and f'action="/review/reads/{r2}/approve"' in read_page.text
    assert f"Open read #{r2} in viewer" in read_page.text
    assert read_page.text.count("<option value=") == 3  # "choose…" + the protocol's two rejection reasons
    for reader_action in ("/skip", "/exclude", "/note", 'id="submit-form"'):
        assert reader_action not in read_page.text


def test_a_reviewer_asks_the_reader_from_the_queue_before_deciding(review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    save_and_submit(env, "reader2", known["reader2"])
    r2 = env.tasks["reader2"]
    # rev1 holds no review task on the item and has not decided: the read opened from the queue offers a comment.
    read_page = env.client.get(f"/review/reads/{r2}", headers=env.headers["rev1"])
    assert f'action="/tasks/{r2}/comments"' in read_page.text
    posted = env.client.post(f"/tasks/{r2}/comments", headers=env.headers["rev1"], follow_redirects=False,
                             data={"body": "Is the lesion on slice 2 the same as on slice 3?", "from_queue": "true"})
    assert (posted.status_code, posted.headers["location"]) == (303, f"/review/reads/{r2}?saved=comment#thread-{r2}")
    assert "the same as on slice 3?" in env.client.get(f"/tasks/{r2}", headers=env.headers["reader2"]).text
    # Another reader of the item is no reviewer: the thread stays closed to them, at the page and the API.
    assert env.client.post(f"/tasks/{r2}/comments", headers=env.headers["reader1"], follow_redirects=False,
                           data={"body": "peek"}).status_code == 403
    assert env.client.get(f"/api/tasks/{r2}/comments", headers=env.headers["reader1"]).status_code == 403
    # A read still being read is not waiting for a decision: no comment from the queue reviewer yet.
    r3 = env.tasks["reader3"]
    assert env.client.get(f"/api/tasks/{r3}/comments", headers=env.headers["rev1"]).status_code == 403


def test_approve_and_reject_through_the_forms_change_what_the_api_changes(review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    r1, r2, r3 = (env.tasks[r] for r in READERS)
    for reader in READERS:
        save_and_submit(env, reader, known[reader])
    review_task = _claim(env, "rev1")  # every read is in: Next gives rev1 the item's review task
    assert review_task.purpose == "review"
    # A read from the queue now opens on rev1's review page, which shows every read of the item.
    opened = env.client.get(f"/review/reads/{r2}", headers=env.headers["rev1"], follow_redirects=False)
    assert (opened.status_code, opened.headers["location"]) == (303, f"/tasks/{review_task.id}#read-{r2}")
    review_page = env.client.get(f"/tasks/{review_task.id}", headers=env.headers["rev1"])
    assert review_page.status_code == 200
    for read in (r1, r2, r3):
        assert f'action="/review/reads/{read}/approve"' in review_page.text
        assert f'action="/review/reads/{read}/reject"' in review_page.text
    for reader_action in (f"/tasks/{review_task.id}/skip", f"/tasks/{review_task.id}/exclude",
                          f"/tasks/{review_task.id}/note", 'id="submit-form"'):
        assert reader_action not in review_page.text
    assert "<kbd>A</kbd></dt>" in review_page.text and "<kbd>R</kbd></dt>" in review_page.text  # in the ? help

    # Reject reader1 through the form and reader2 through the API, with the same reason and comment.
    form = env.client.post(f"/review/reads/{r1}/reject", headers=env.headers["rev1"], follow_redirects=False,
                           data={"reason": "wrong label", "comment": COMMENT, "back": str(review_task.id)})
    assert form.status_code == 303, form.text
    assert form.headers["location"] == f"/tasks/{review_task.id}?saved=rejected&read={r1}#read-{r1}"
    api = env.client.post(f"/api/review/tasks/{r2}/reject", headers=env.headers["rev1"],
                          json={"reason": "wrong label", "comment": COMMENT})
    assert api.status_code == 200, api.text
    assert _state(env, r1) == _state(env, r2) == {
        "status": "returned", "decisions": [("reject", "wrong label", COMMENT, True, True)],
        "audit": ["task_return", "review_reject"]}
    assert f"Read #{r1} returned to its reader." in env.client.get(form.headers["location"],
                                                                  headers=env.headers["rev1"]).text

    # The reader's returned read shows the reason and the comment first.
    returned = env.client.get(f"/tasks/{r1}", headers=env.headers["reader1"]).text
    banner = re.search(r'<section class="card returned" id="returned".*?</section>', returned, re.S)
    assert banner is not None and "wrong label" in banner[0] and COMMENT in banner[0]
    assert returned.index('id="returned"') < returned.index('id="ctx-title"')
    assert 'action="/next"' in banner[0]  # "Work on it again": Next serves the returned read first

    # Both readers fix and resubmit; then reader1 is approved through the form and reader2 through the API.
    for reader in ("reader1", "reader2"):
        assert _claim(env, reader).id == env.tasks[reader]  # the returned read comes back in progress
        save_and_submit(env, reader, known[reader])
    form = env.client.post(f"/review/reads/{r1}/approve", headers=env.headers["rev1"], follow_redirects=False,
                           data={"back": str(review_task.id)})
    assert form.status_code == 303, form.text
    api = env.client.post(f"/api/review/tasks/{r2}/approve", headers=env.headers["rev1"])
    assert api.status_code == 200, api.text
    assert _state(env, r1) == _state(env, r2) == {
        "status": "done", "decisions": [("reject", "wrong label", COMMENT, False, True),
                                        ("approve", None, None, True, True)],
        "audit": ["task_return", "review_reject", "task_done", "review_approve"]}

    # The last approval, from the review page: the item is finished; the page shows what the workflow made.
    last = env.client.post(f"/review/reads/{r3}/approve", headers=env.headers["rev1"], follow_redirects=False,
                           data={"back": str(review_task.id)})
    assert last.status_code == 303
    assert last.headers["location"] == f"/tasks/{review_task.id}?saved=approved&read={r3}#read-{r3}"
    shown = env.client.get(last.headers["location"], headers=env.headers["rev1"]).text
    with session_scope(env.sessions) as session:
        [result] = repository.consensus_results(session, env.item_id)
        arbitration = repository.item_task(session, env.item_id, TaskPurpose.ARBITRATION)
        final = repository.final_label(session, env.item_id)
        review = session.get(Task, review_task.id)
        assert arbitration is not None and final is not None and review is not None
        assert (final.source, final.consensus_id, review.status) == ("consensus", result.id, "done")
        assert arbitration.reader_id == user_named(session, "rev1").id
        min_dice, arbitration_id = result.min_dice, arbitration.id
    assert min_dice < THRESHOLD  # reader3's lesion is elsewhere
    outcome = re.search(r'<section class="card outcome" id="outcome".*?</section>', shown, re.S)
    assert outcome is not None
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", outcome[0]))
    assert "Reads approved: 3 of 3" in text
    assert f"Consensus computed (majority): lowest pairwise Dice {min_dice:.3f}, below the project's " \
           f"threshold {THRESHOLD:.2f}." in text
    assert f"Arbitration task #{arbitration_id} created for rev1 (open)." in text
    assert f'<a href="/tasks/{arbitration_id}">' in outcome[0]  # rev1 is the arbiter: a link to it
    assert "Final label: consensus" in text
    assert f"Read #{r3} approved." in shown
    assert 'class="approve-form"' not in shown  # nothing left to decide


def test_the_arbitration_page_submits_the_arbiters_seg(review_env: ReviewEnv) -> None:  # noqa: F811
    """All reads side by side; without a saved SEG the submit is a 409 page that says what to do."""
    env = review_env
    known = masks()
    for reader in READERS:
        save_and_submit(env, reader, known[reader])
    approve_all_reads(env)  # below the threshold: one arbitration task, for rev1
    nothing = env.client.post("/review/next", headers=env.headers["rev1"], follow_redirects=False)
    assert (nothing.status_code, nothing.headers["location"]) == (303, "/review?empty=1")
    assert "No read is waiting for your review right now." in env.client.get(
        "/review?empty=1", headers=env.headers["rev1"]).text
    with session_scope(env.sessions) as session:  # assigned to rev1, open: started from its own page
        arbitration = session.scalars(select(Task).where(Task.item_id == env.item_id,
                                                         Task.purpose == "arbitration")).one()
        session.expunge(arbitration)
        assert arbitration.reader_id == user_named(session, "rev1").id
    assert arbitration.status == "open"
    assigned = env.client.get(f"/tasks/{arbitration.id}", headers=env.headers["rev1"]).text
    assert "Start arbitration" in assigned and "Submit arbitration" not in assigned
    started = env.client.post(f"/tasks/{arbitration.id}/start", headers=env.headers["rev1"], follow_redirects=False)
    assert (started.status_code, started.headers["location"]) == (303, f"/tasks/{arbitration.id}")
    again = env.client.post(f"/tasks/{arbitration.id}/start", headers=env.headers["rev1"], follow_redirects=False)
    assert again.status_code == 409 and "not open: nothing to start" in again.text
    with session_scope(env.sessions) as session:
        assert session.get(Task, arbitration.id).status == "in_progress"  # type: ignore[union-attr]
    page = env.client.get(f"/tasks/{arbitration.id}", headers=env.headers["rev1"])
    assert page.status_code == 200 and f"Arbitration #{arbitration.id}" in page.text
    assert "Submit arbitration" in page.text
    for reader in READERS:  # every read side by side, each one in the viewer
        assert f"Open read #{env.tasks[reader]} in viewer" in page.text
    for reader_action in ("/skip", "/exclude", "/note", "approve-form"):
        assert reader_action not in page.text

    early = env.client.post(f"/tasks/{arbitration.id}/submit", headers=env.headers["rev1"], follow_redirects=False)
    assert early.status_code == 409
    assert (f"arbitration task {arbitration.id} has no segmentation: save the arbitrated SEG before submitting"
            in early.text)
    with session_scope(env.sessions) as session:
        version = save_labels(session, env.orthanc, "rev1", arbitration.id, known["reader1"], SEGMENTS)
        version_id = version.id
    done = env.client.post(f"/tasks/{arbitration.id}/submit", headers=env.headers["rev1"], follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/?done={arbitration.id}"
    with session_scope(env.sessions) as session:
        final = repository.final_label(session, env.item_id)
        task = session.get(Task, arbitration.id)
        assert final is not None and task is not None
        assert (final.source, final.annotation_version_id, task.status) == ("arbitration", version_id, "done")


def test_hostile_review_posts_get_precise_refusals_and_change_nothing(review_env: ReviewEnv) -> None:  # noqa: F811
    env = review_env
    known = masks()
    r1, r2 = env.tasks["reader1"], env.tasks["reader2"]
    save_and_submit(env, "reader1", known["reader1"])
    save_and_submit(env, "reader2", known["reader2"])
    before = {read: _state(env, read) for read in (r1, r2)}
    assert before[r1] == {"status": "submitted", "decisions": [], "audit": []}

    # A reason outside the protocol: a 400 page naming the allowed reasons, the form kept.
    bad = env.client.post(f"/review/reads/{r1}/reject", headers=env.headers["rev1"],
                          data={"reason": "I do not like it", "comment": COMMENT})
    assert bad.status_code == 400
    assert f"Read #{r1}: rejection reason must be one of: incomplete segmentation, wrong label" in bad.text
    assert COMMENT in bad.text
    empty = env.client.post(f"/review/reads/{r1}/reject", headers=env.headers["rev1"], data={"reason": "  "})
    assert empty.status_code == 400 and "choose a rejection reason (incomplete segmentation, wrong label)" in empty.text
    long = env.client.post(f"/review/reads/{r1}/reject", headers=env.headers["rev1"],
                           data={"reason": "wrong label", "comment": "x" * 4001})
    assert long.status_code == 400 and "at most 4000 characters, this one has 4001" in long.text
    missing = env.client.post("/review/reads/999999/approve", headers=env.headers["rev1"])
    assert missing.status_code == 404 and "no read task 999999" in missing.text

    # A reader cannot post the review forms, not even on another reader's read of their item.
    for url in (f"/review/reads/{r2}/approve", f"/review/reads/{r2}/reject"):
        refused = env.client.post(url, headers=env.headers["reader1"], data={"reason": "wrong label"})
        assert refused.status_code == 403 and "this page needs the role admin or reviewer" in refused.text
    assert env.client.get(f"/review/reads/{r2}", headers=env.headers["reader1"]).status_code == 403

    # A cross-site post: the browser sends no session cookie (SameSite=Lax), so it is a stranger's post and
    # goes to the login page, exactly like the reader's forms.
    login = env.client.post("/login", data={"username": "rev1", "password": PASSWORD}, follow_redirects=False)
    assert login.status_code == 303 and "samesite=lax" in login.headers["set-cookie"].lower()
    assert env.client.get("/review").status_code == 200  # the cookie works on the site itself
    env.client.cookies.clear()
    for url, data in ((f"/review/reads/{r1}/approve", {}), (f"/review/reads/{r1}/reject", {"reason": "wrong label"}),
                      ("/review/next", {}), (f"/tasks/{r1}/submit", {})):
        forged = env.client.post(url, data=data, follow_redirects=False,
                                 headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"})
        assert (forged.status_code, forged.headers["location"]) == (303, "/login"), url
    assert {read: _state(env, read) for read in (r1, r2)} == before


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_reviewer_who_read_the_item_cannot_decide_from_the_page(review_env: ReviewEnv,  # noqa: F811
                                                                   decision: str) -> None:
    """Independence of review holds on the page: the workflow's check refuses, the page says why (403)."""
    env = review_env
    known = masks()
    save_and_submit(env, "reader1", known["reader1"])
    with session_scope(env.sessions) as session:
        # rev1 also read this item (a second reading slot of theirs would be the same): make them a reader of it.
        task = session.get(Task, env.tasks["reader3"])
        assert task is not None
        task.reader_id = user_named(session, "rev1").id
    refused = env.client.post(f"/review/reads/{env.tasks['reader1']}/{decision}", headers=env.headers["rev1"],
                              data={"reason": "wrong label"})
    assert refused.status_code == 403
    assert "a reviewer does not review reads of an item they read themselves" in refused.text
    assert _state(env, env.tasks["reader1"])["status"] == "submitted"
