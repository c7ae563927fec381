"""The server-rendered pages: each role sees its pages, "Next" claims and redirects, the task forms submit /
skip / exclude / note with precise 4xx messages on bad input, a reader never sees another reader's task (404)
nor admin pages (403), and a reader's pages hold only de-identified context (never a repeat's purpose)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.projects import repository as project_repository
from pacslabel.projects.clinical import import_clinical_csv
from pacslabel.projects.service import sync_project_items
from pacslabel.tasks import repository as task_repository
from pacslabel.tasks import service as task_service
from pacslabel.tasks.models import Task
from pacslabel.users.repository import get_user_by_name
from pacslabel.web.app import create_app
from pacslabel.web.pages import render_markdown, swatch_color
from tests.fixtures.database import offline_test_settings
from tests.projects.helpers import PASSWORD, add_series, apply_dict, make_user, project_dict

PATIENTS = ("PSEUDO-A1", "PSEUDO-B2", "PSEUDO-C3")
INSTRUCTIONS = "## Scope\nOutline **every** lesion.\n\n- T2 first\n- then ADC\n\n<script>alert(1)</script>"


@dataclass
class Site:
    client: TestClient
    sessions: sessionmaker[Session]



@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    settings = offline_test_settings(tmp_path / "var", db_url)
    engine = create_db_engine(db_url)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        make_user(session, "admin1", "admin")
        make_user(session, "reader1")
        make_user(session, "reader2")
        make_user(session, "senior1", "reviewer")
        for patient in PATIENTS:
            add_series(session, patient, "s1", "t2")
        protocol = dict(project_dict()["protocol"], instructions=INSTRUCTIONS)
        project = apply_dict(session, project_dict(
            protocol=protocol, readers_per_split={"train": 2, "validation": 2, "test": 2},
            context={"clinical_attributes": [{"name": "psa", "type": "number", "unit": "ng/mL"}]}))
        sync_project_items(session, project)
        import_clinical_csv(session, project, "patient,age,sex,psa\n" + "".join(
            f"{p},{63 + i},M,{4.5 + i}\n" for i, p in enumerate(PATIENTS)), "tester")
    with TestClient(create_app(settings)) as client:
        yield Site(client, sessions)
    engine.dispose()


def login(client: TestClient, username: str) -> None:
    client.cookies.clear()
    response = client.post("/login", data={"username": username, "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303, response.text


def next_task(client: TestClient) -> int:
    response = client.post("/next", follow_redirects=False)
    assert response.status_code == 303
    match = re.fullmatch(r"/tasks/(\d+)", response.headers["location"])
    assert match, response.headers["location"]
    return int(match[1])


def test_markdown_subset_escapes_html() -> None:
    html = str(render_markdown(INSTRUCTIONS + "\n\n1. one\n2. *two* `x<y`"))
    assert "<h4>Scope</h4>" in html and "<strong>every</strong>" in html
    assert "<ul><li>T2 first</li><li>then ADC</li></ul>" in html
    assert "<ol><li>one</li><li><em>two</em> <code>x&lt;y</code></li></ol>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert str(render_markdown('[x](javascript:alert(1)) <img src=x onerror="a">')).count("<") == 2  # only <p> and </p>


def test_label_colours_become_safe_css_hex() -> None:
    assert swatch_color({"hex": "#FF0000"}) == "#ff0000"
    assert swatch_color({"cielab": [53.24, 80.09, 67.20]}) == "#ff0000"  # CIELab red
    assert swatch_color({"hex": "red; background: url(x)"}) is None and swatch_color("#ff0000") is None


def test_each_role_sees_its_pages(site: Site) -> None:
    client = site.client
    assert client.get("/history", follow_redirects=False).headers["location"] == "/login"
    login(client, "reader1")
    worklist = client.get("/")
    assert worklist.status_code == 200 and 'id="next-form"' in worklist.text and "Nothing open" in worklist.text
    assert client.get("/history").status_code == 200
    assert "/admin/projects" not in worklist.text  # no admin links for readers
    login(client, "senior1")
    assert 'id="next-form"' in client.get("/").text  # reviewers press Next too
    login(client, "admin1")
    home = client.get("/")
    assert home.status_code == 200 and "/admin/audit" in home.text
    projects = client.get("/admin/projects")
    assert projects.status_code == 200 and "test-project" in projects.text and "v1" in projects.text
    assert re.search(r'class="num">3<', projects.text)  # three items
    users = client.get("/admin/users")
    assert users.status_code == 200 and all(name in users.text for name in ("reader1", "senior1", "annotator"))
    ingest = client.get("/admin/ingest")
    assert ingest.status_code == 200 and "Nothing in quarantine" in ingest.text
    audit = client.get("/admin/audit")
    assert audit.status_code == 200 and "project_apply" in audit.text or "login" in audit.text


def test_next_claims_and_the_task_page_shows_deidentified_context(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    task_id = next_task(client)
    page = client.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    text = page.text
    assert 'style="background: #ff0000"' in text  # the protocol label's colour
    assert "Outline <strong>every</strong> lesion." in text and "&lt;script&gt;" in text and "<script>alert" not in text
    assert re.search(r"<dt>Age</dt><dd>[6-9]0-[6-9]9</dd>", text) and "<dt>Sex</dt><dd>M</dd>" in text
    assert re.search(r"<dt>psa</dt>\s*<dd>[4-7]\.5 ng/mL</dd>", text)
    with session_scope(site.sessions) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "in_progress"
        item = project_repository.get_item(session, task.item_id)
        assert item is not None
        study_uid = task_repository.study_uid(session, item.study_id)
    assert f'href="/ohif/segmentation?StudyInstanceUIDs={study_uid}"' in text
    # Nothing PHI-like or blinding-relevant: no pseudonymous patient id, no exact age, split, slot or purpose.
    for leak in (*PATIENTS, "63", "64", "65", "split", "slot", "train", "validation", "PatientName", "BirthDate"):
        assert leak not in re.sub(r"2\.25\.\d+|#\d+|/tasks/\d+", "", text), leak
    # Next again hands back the unfinished task, not a new one.
    assert next_task(client) == task_id
    worklist = client.get("/").text
    assert f'href="/tasks/{task_id}"' in worklist and "in progress" in worklist and "ng/mL" in worklist


def test_submit_skip_exclude_and_note_from_forms(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    first = next_task(client)
    note = client.post(f"/tasks/{first}/note", data={"text": "  could you check this lesion?  "},
                       follow_redirects=False)
    assert note.status_code == 303 and note.headers["location"] == f"/tasks/{first}?saved=note"
    assert "could you check this lesion?" in client.get(f"/tasks/{first}?saved=note").text
    done = client.post(f"/tasks/{first}/submit", follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/?done={first}"
    assert f"Task {first} done." in client.get(done.headers["location"]).text
    history = client.get("/history").text
    assert f'href="/tasks/{first}"' in history and ">read<" in history

    second = next_task(client)
    assert second != first
    skipped = client.post(f"/tasks/{second}/skip", data={"reason": "images do not load"}, follow_redirects=False)
    assert skipped.status_code == 303
    third = next_task(client)
    excluded = client.post(f"/tasks/{third}/exclude", data={"reason": "artifact", "note": "motion"},
                           follow_redirects=False)
    assert excluded.status_code == 303
    with session_scope(site.sessions) as session:
        rows = {t.id: t for t in session.query(Task).filter(Task.id.in_([first, second, third]))}
        assert rows[first].note == "could you check this lesion?" and rows[first].status == "done"
        assert rows[second].status == "skipped" and rows[second].skip_reason == "images do not load"
        assert rows[third].exclusion_reason == "artifact" and rows[third].note == "motion"
    history = client.get("/history").text
    assert "skipped: images do not load" in history and "excluded: artifact" in history


def test_bad_form_input_rerenders_with_a_precise_message(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    task_id = next_task(client)
    missing = client.post(f"/tasks/{task_id}/skip", data={})
    assert missing.status_code == 400
    assert "choose a skip reason (images do not load)" in missing.text and 'role="alert"' in missing.text
    wrong = client.post(f"/tasks/{task_id}/exclude", data={"reason": "boring", "note": "kept text"})
    assert wrong.status_code == 400
    assert "exclusion reason must be one of: wrong image, artifact" in wrong.text
    assert 'value="kept text"' in wrong.text  # the reader's input is kept
    empty_note = client.post(f"/tasks/{task_id}/note", data={"text": "   "})
    assert empty_note.status_code == 400 and "a note needs some text" in empty_note.text
    long_note = client.post(f"/tasks/{task_id}/note", data={"text": "x" * 4001})
    assert long_note.status_code == 400 and "at most 4000 characters" in long_note.text
    # A failed exclude with a bad note leaves nothing behind (rolled back).
    client.post(f"/tasks/{task_id}/exclude", data={"reason": "artifact", "note": "y" * 4001})
    with session_scope(site.sessions) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.exclusion_reason is None and task.status == "in_progress"
    assert client.post(f"/tasks/{task_id}/submit", follow_redirects=False).status_code == 303
    again = client.post(f"/tasks/{task_id}/submit")
    assert again.status_code == 409 and "cannot become submitted" in again.text


def test_a_reader_never_sees_another_readers_task_nor_admin_pages(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    task_id = next_task(client)
    login(client, "reader2")
    for response in (client.get(f"/tasks/{task_id}"), client.post(f"/tasks/{task_id}/submit"),
                     client.post(f"/tasks/{task_id}/skip", data={"reason": "images do not load"}),
                     client.post(f"/tasks/{task_id}/note", data={"text": "hi"}), client.get("/tasks/999999")):
        assert response.status_code == 404
        assert "in progress" not in response.text and "PSEUDO" not in response.text
    for path in ("/admin/projects", "/admin/users", "/admin/ingest", "/admin/audit"):
        response = client.get(path)
        assert response.status_code == 403 and "needs the role admin" in response.text
    assert client.post("/admin/ingest/quarantine/1/release").status_code == 403
    # An admin may look at the task (with reader and split) but not act on it.
    login(client, "admin1")
    page = client.get(f"/tasks/{task_id}")
    assert page.status_code == 200 and "reader reader1" in page.text and 'id="submit-form"' not in page.text
    assert client.post(f"/tasks/{task_id}/submit").status_code == 403


def test_a_repeat_looks_like_an_ordinary_read(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    first = next_task(client)
    client.post(f"/tasks/{first}/submit")
    with session_scope(site.sessions) as session:
        task = session.get(Task, first)
        reader = get_user_by_name(session, "reader1")
        assert task is not None and reader is not None
        item = project_repository.get_item(session, task.item_id)
        assert item is not None
        task_service.assign_task(session, item, reader, "repeat", actor="admin1")
    repeat = next_task(client)
    assert repeat != first
    for text in (client.get(f"/tasks/{repeat}").text, client.get("/").text, client.get("/history").text):
        assert "repeat" not in text.lower()
    login(client, "admin1")
    assert "repeat" in client.get(f"/tasks/{repeat}").text  # the admin sees the purpose


def test_quarantine_actions_on_a_missing_item_give_a_precise_404(site: Site) -> None:
    client = site.client
    login(client, "admin1")
    response = client.post("/admin/ingest/quarantine/424242/release")
    assert response.status_code == 404 and "quarantine item 424242 does not exist" in response.text
    response = client.post("/admin/ingest/quarantine/424242/delete")
    assert response.status_code == 404


def test_static_assets_are_local_and_keyboard_help_is_listed(site: Site) -> None:
    client = site.client
    login(client, "reader1")
    page = client.get("/").text
    assert "http://" not in page and "https://" not in page  # no CDN
    assert 'id="help"' in page and "<kbd>N</kbd>" in page and "<kbd>S</kbd>" in page
    script = client.get("/static/pacslabel.js")
    assert script.status_code == 200 and "INPUT" in script.text
    assert client.get("/static/pacslabel.css").status_code == 200
