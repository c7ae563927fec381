"""JSON API: readers see and act only on their own tasks (403/404), admin endpoints refuse readers (403),
bad bodies get 4xx with a message, project files posted with errors get line and field, repeats look like
reads to readers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.projects.routes import router as projects_router
from pacslabel.settings import Settings
from pacslabel.tasks.routes import router as tasks_router
from pacslabel.users import service as user_service
from pacslabel.web.app import create_app
from tests.fixtures.database import offline_test_settings
from tests.projects.helpers import add_series, project_dict

EXAMPLE = (Path(__file__).parents[2] / "examples" / "projects" / "prostate-mri.yaml").read_text()



def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    mounted = {getattr(route, "path", "") for route in app.routes}
    for router in (projects_router, tasks_router):  # the lead mounts them in create_app; until then, here
        if not any(getattr(r, "path", "") in mounted for r in router.routes):
            app.include_router(router)
    return app


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    settings = offline_test_settings(tmp_path / "var", db_url)
    engine = create_db_engine(db_url)
    headers: dict[str, dict[str, str]] = {}
    with session_scope(make_sessionmaker(engine)) as session:
        for name, role in (("admin1", "admin"), ("reader1", "annotator"), ("reader2", "annotator")):
            user_service.create_user(session, name, role, "a long enough password")
            headers[name] = {"Authorization": f"Bearer {user_service.create_api_token(session, name)}"}
        for p in range(3):
            add_series(session, f"P{p}", "s1", "t2")
    engine.dispose()
    with TestClient(_app(settings)) as client:
        yield client, headers


def _apply(client: TestClient, headers: dict[str, str], data: dict) -> None:  # type: ignore[type-arg]
    response = client.post("/api/projects/apply", content=yaml.safe_dump(data), headers=headers)
    assert response.status_code == 200, response.text


def test_admin_applies_a_project_file_and_errors_name_line_and_field(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    response = client.post("/api/projects/apply", content=EXAMPLE, headers=headers["admin1"])
    assert response.status_code == 200 and response.json()["created"] is True
    bad = EXAMPLE.replace("test: 0.15}", "test: 0.25}")
    response = client.post("/api/projects/apply", content=bad, headers=headers["admin1"])
    assert response.status_code == 400
    body = response.json()
    assert body["errors"][0]["field"] == "split.ratios" and body["errors"][0]["message"] == "must sum to 1.0"
    assert body["detail"].startswith("project.yaml line ")
    assert client.post("/api/projects/apply", content=EXAMPLE, headers=headers["reader1"]).status_code == 403
    assert client.post("/api/projects/apply", content="", headers=headers["admin1"]).status_code == 400


def test_readers_see_projects_with_protocol_and_instructions(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    _apply(client, headers["admin1"], project_dict())
    listed = client.get("/api/projects", headers=headers["reader1"]).json()["projects"]
    assert [p["slug"] for p in listed] == ["test-project"]
    detail = client.get("/api/projects/test-project", headers=headers["reader1"]).json()
    assert detail["instructions"] == "Outline every lesion." and "definition" not in detail
    assert detail["protocol"]["segments"][0]["type"]["CodeMeaning"] == "Neoplasm"
    assert client.get("/api/projects/nope", headers=headers["reader1"]).status_code == 404


def test_a_reader_cannot_see_or_act_on_another_readers_task(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    _apply(client, headers["admin1"], project_dict(readers_per_split={"train": 2, "validation": 2, "test": 2}))
    assert client.post("/api/projects/test-project/sync", headers=headers["admin1"]).json()["added"] == 3
    task = client.post("/api/tasks/next", headers=headers["reader1"]).json()["task"]
    assert task["status"] == "in_progress" and "reader" not in task and "split" not in task
    assert "age_bracket" in task["context"]
    task_id = task["id"]
    other = headers["reader2"]
    assert client.get(f"/api/tasks/{task_id}", headers=other).status_code == 403
    for action, body in (("submit", None), ("skip", {"reason": "images do not load"}),
                         ("exclude", {"reason": "artifact"}), ("note", {"text": "hello"})):
        response = client.post(f"/api/tasks/{task_id}/{action}", json=body, headers=other)
        assert response.status_code == 403, action
        assert "in_progress" not in response.text
    assert client.post("/api/tasks/999999/submit", headers=other).status_code == 404
    assert all(t["id"] != task_id for t in client.get("/api/tasks/mine", headers=other).json()["tasks"])
    # The owner can act.
    assert client.post(f"/api/tasks/{task_id}/note", json={"text": "check lesion 2?"},
                       headers=headers["reader1"]).json()["note"] == "check lesion 2?"
    assert client.post(f"/api/tasks/{task_id}/submit", headers=headers["reader1"]).json()["status"] == "done"
    # Submitting twice is a conflict with a message.
    again = client.post(f"/api/tasks/{task_id}/submit", headers=headers["reader1"])
    assert again.status_code == 409 and "cannot become submitted" in again.json()["detail"]


def test_admin_endpoints_refuse_readers(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    _apply(client, headers["admin1"], project_dict())
    body = {"project": "test-project", "item_id": 1, "reader": "reader1", "purpose": "read"}
    assert client.post("/api/tasks/assign", json=body, headers=headers["reader1"]).status_code == 403
    assert client.post("/api/projects/test-project/sync", headers=headers["reader1"]).status_code == 403
    assert client.post("/api/projects/test-project/clinical", content="patient\n",
                       headers=headers["reader1"]).status_code == 403


def test_bad_bodies_get_4xx_with_a_message(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    _apply(client, headers["admin1"], project_dict())
    client.post("/api/projects/test-project/sync", headers=headers["admin1"])
    task_id = client.post("/api/tasks/next", headers=headers["reader1"]).json()["task"]["id"]
    missing = client.post(f"/api/tasks/{task_id}/skip", json={}, headers=headers["reader1"])
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"].endswith("reason")
    wrong = client.post(f"/api/tasks/{task_id}/skip", json={"reason": "bored"}, headers=headers["reader1"])
    assert wrong.status_code == 400 and "skip reason must be one of" in wrong.json()["detail"]
    unknown = client.post("/api/tasks/assign", json={"project": "test-project", "item_id": 1, "reader": "ghost"},
                          headers=headers["admin1"])
    assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]
    purpose = client.post("/api/tasks/assign", json={"project": "test-project", "item_id": 1, "reader": "reader2",
                                                     "purpose": "peek"}, headers=headers["admin1"])
    assert purpose.status_code == 422
    csv_bad = client.post("/api/projects/test-project/clinical", content="patient,age\nP0,old\n",
                          headers=headers["admin1"])
    assert csv_bad.status_code == 400 and "row 2, column 'age'" in csv_bad.json()["detail"]


def test_repeats_look_like_reads_to_the_reader_but_not_to_admins(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    data = project_dict(repeats={"fraction": 1.0, "min_gap_tasks": 1},
                        split={"ratios": {"train": 1.0, "validation": 0.0, "test": 0.0}})
    _apply(client, headers["admin1"], data)
    client.post("/api/projects/test-project/sync", headers=headers["admin1"])
    reader = headers["reader1"]
    seen: list[dict] = []  # type: ignore[type-arg]
    while (task := client.post("/api/tasks/next", json={"project": "test-project"}, headers=reader).json()["task"]):
        seen.append(task)
        client.post(f"/api/tasks/{task['id']}/submit", headers=reader)
    # Reads A, B, then A again, B again, C; C's repeat waits for one more task by this reader.
    assert len(seen) == 5 and {t["purpose"] for t in seen} == {"read"}
    assert [t["item_id"] for t in seen][2:4] == [t["item_id"] for t in seen][0:2]
    admin_views = [client.get(f"/api/tasks/{t['id']}", headers=headers["admin1"]).json() for t in seen]
    assert sorted(v["purpose"] for v in admin_views) == ["read"] * 3 + ["repeat"] * 2
    # The waiting repeat is invisible to its reader: not in "my tasks", 404 by id.
    mine = client.get("/api/tasks/mine", headers=reader).json()["tasks"]
    assert len(mine) == 5 and {t["purpose"] for t in mine} == {"read"}
    waiting_id = max(t["id"] for t in seen) + 1
    assert client.get(f"/api/tasks/{waiting_id}", headers=headers["admin1"]).json()["purpose"] == "repeat"
    assert client.get(f"/api/tasks/{waiting_id}", headers=reader).status_code == 404


def test_an_assigned_task_is_started_by_its_reader_from_its_page_or_the_api(api) -> None:  # type: ignore[no-untyped-def]
    client, headers = api
    _apply(client, headers["admin1"], project_dict())
    client.post("/api/projects/test-project/sync", headers=headers["admin1"])
    assigned = client.post("/api/tasks/assign", json={"project": "test-project", "item_id": 1, "reader": "reader1"},
                           headers=headers["admin1"])
    assert assigned.status_code in (200, 201), assigned.text
    task_id = assigned.json()["id"]
    page = client.get(f"/tasks/{task_id}", headers=headers["reader1"]).text
    assert "Start task" in page and 'id="submit-form"' not in page
    assert client.post(f"/api/tasks/{task_id}/start", headers=headers["reader2"]).status_code == 403
    started = client.post(f"/api/tasks/{task_id}/start", headers=headers["reader1"])
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    again = client.post(f"/api/tasks/{task_id}/start", headers=headers["reader1"])
    assert again.status_code == 409 and "not open" in again.json()["detail"]
    page = client.get(f"/tasks/{task_id}", headers=headers["reader1"]).text
    assert "Start task" not in page and 'id="submit-form"' in page
