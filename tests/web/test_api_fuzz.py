"""Hostile input at every JSON door: a bounded, deterministic schemathesis run over every `/api/*` operation (and
the health and auth doors) of the real app, served by uvicorn on a free port, on a populated world (the review
world: an admin, a reviewer and three readers with open reads on a CT study stored in the real Orthanc, one saved
SEG version). Each generated request is sent once with an admin token and once with a reader token; no answer
may be a 5xx, and every answer must match the OpenAPI document the app publishes (status body schema and content
type). Valid-shaped requests (positive mode) and schema-breaking ones (negative mode) are both generated.

Each request is also checked against the log: no server-side log line (any level) may carry a generated string.
``FUZZ_EXAMPLES`` (default 10 per operation and mode) deepens a run by hand; the seed is fixed (derandomize).
The DICOMweb gateway has its own tests and is left out here. The regression tests below pin what the runs found."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.audit.models import AuditEvent
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.tasks.models import Task
from pacslabel.web.api_contract import MAX_ROW_ID
from pacslabel.web.app import create_app
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.server import serve
from tests.fixtures.worlds import (
    add_study_item,
    add_users,
    bearer,
    open_task,
    save_labels,
    store_ct_study,
    world_database,
    world_settings,
)
from tests.projects.helpers import apply_dict, project_dict
from tests.review.test_workflow import READERS, SEGMENTS, masks, project_settings

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class FuzzWorld:
    base_url: str
    schema: Any
    tokens: dict[str, str]
    known: dict[str, Any]
    sessions: sessionmaker[Session]


@pytest.fixture
def fuzz_world(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[FuzzWorld]:
    with world_database(db_url) as sessions:
        with session_scope(sessions) as session:
            users, tokens = add_users(session, [("admin1", "admin"), ("rev1", "reviewer"),
                                                *((r, "annotator") for r in READERS)], password=None)
            project = apply_dict(session, project_dict(**project_settings()))
            datasets, study = store_ct_study(session, orthanc.client, "F")
            item = add_study_item(session, project.id, study, [str(datasets[0].SeriesInstanceUID)],
                                  split="validation", needs_review=True, released_at=utcnow())
            project_id, item_id = project.id, item.id
            task_ids = {name: open_task(session, project.id, item.id, users[name].id, slot=slot,
                                        protocol_version=project.protocol_version, claimed_at=utcnow()).id
                        for slot, name in enumerate(READERS)}
        with session_scope(sessions) as session:
            save_labels(session, orthanc.client, "reader1", task_ids["reader1"], masks()["reader1"], SEGMENTS)
        app = create_app(world_settings(orthanc, db_url, tmp_path / "var"))
        # As `pacslabel web` runs it: no access log (URLs carry UIDs), the app's own loggers only.
        with serve(app, name="uvicorn-fuzz", log_config=None, access_log=False) as base:
            schema = schemathesis.openapi.from_dict(app.openapi())
            # A snapshot, so that the manifest, download and diff doors answer with content, not only 404s.
            made = requests.post(f"{base}/api/projects/liver-review/snapshots", json={},
                                 headers=bearer(tokens["admin1"]), timeout=60)
            assert made.status_code == 201, made.text
            snapshot = made.json()["name"]
            known = {"snapshot": snapshot, "other": snapshot,
                     "slug": "liver-review", "project": "liver-review", "project_id": project_id,
                     "task_id": task_ids["reader2"], "read_task_id": task_ids["reader1"], "item_id": item_id,
                     "username": "reader2"}
            yield FuzzWorld(base, schema, tokens, known, sessions)


class _LogCapture(logging.Handler):
    """Every log record the server side writes while the run lasts, at every level (client libraries excluded)."""

    CLIENT_SIDE = ("urllib3", "hypothesis", "schemathesis", "requests")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.CLIENT_SIDE):
            self.lines.append(f"{record.name}: {record.getMessage()}")


def _probes(value: Any) -> Iterator[str]:
    """The generated strings worth looking for in a log line (short ones match by chance)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) >= 8:
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _probes(key)
            yield from _probes(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _probes(item)


def _fuzzed_operations(schema: Any) -> list[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if not op.path.startswith("/dicomweb")]


@dataclass
class _Run:
    world: FuzzWorld
    tokens: dict[str, str]
    logs: _LogCapture
    failures: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def operation(self, operation: Any, mode: GenerationMode, path_parameters: dict[str, Any] | None = None) -> None:
        session = requests.Session()
        known = {str(v) for v in self.world.known.values()}

        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def check(case: Any) -> None:
            for who, token in self.tokens.items():
                logged = len(self.logs.lines)
                response = case.call(base_url=self.world.base_url, session=session,
                                     headers={"Authorization": f"Bearer {token}"})
                self.statuses[who, response.status_code // 100] += 1
                where = (f"{who} {mode.value} {operation.method.upper()} {operation.path}: {response.status_code} "
                         f"{response.content[:300]!r} <- {case.path_parameters} {case.query} "
                         f"{str(case.body)[:200]!r}")
                try:
                    case.validate_response(response, checks=CHECKS)
                except FailureGroup as error:  # collected, reported together below
                    self.failures.append(f"{where}: {str(error)[:400]}")
                inputs = [p for p in _probes([case.path_parameters, case.query, case.body]) if p not in known]
                echoed = [line for line in self.logs.lines[logged:] if any(p in line for p in inputs)]
                if echoed:
                    self.failures.append(f"{where}: input echoed into the log: {echoed[:2]!r}")

        try:
            check()
        except Unsatisfiable:
            # Negative mode needs something to break: an operation without parameters has no hostile variant.
            assert mode is GenerationMode.NEGATIVE, f"no valid request for {operation.method} {operation.path}"


@pytest.fixture
def log_capture() -> Iterator[_LogCapture]:
    capture = _LogCapture()
    root, app_logger = logging.getLogger(), logging.getLogger("pacslabel")
    level = app_logger.level
    root.addHandler(capture)
    app_logger.setLevel(logging.DEBUG)  # debug lines must be free of input too
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        app_logger.setLevel(level)


def test_every_api_operation_survives_hostile_input_as_admin_and_reader(fuzz_world: FuzzWorld,
                                                                       log_capture: _LogCapture) -> None:
    operations = _fuzzed_operations(fuzz_world.schema)
    published = {(method.upper(), path) for path, methods in fuzz_world.schema.raw_schema["paths"].items()
                 for method in methods if not path.startswith("/dicomweb")}
    assert {(op.method.upper(), op.path) for op in operations} == published
    run = _Run(fuzz_world, {"admin": fuzz_world.tokens["admin1"], "reader": fuzz_world.tokens["reader2"]},
               log_capture)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run.operation(operation, mode)
        # Again with the world's real ids and slugs in the path, to get past the 404s into the routes' logic.
        names = [p.name for p in operation.path_parameters]
        if names and all(n in fuzz_world.known for n in names):
            run.operation(operation, GenerationMode.POSITIVE, {n: fuzz_world.known[n] for n in names})
    assert not run.failures, "\n".join(run.failures)
    # The run reached the routes' logic for both users (not only 401/404/422), and never a 5xx.
    assert run.statuses["admin", 2] > 0 and run.statuses["reader", 2] > 0, run.statuses
    assert run.statuses["admin", 4] > 0 and run.statuses["reader", 4] > 0, run.statuses
    assert run.statuses["admin", 5] == run.statuses["reader", 5] == 0


# --- regressions: what the fuzzing found, each fixed in its route module ---------------------------------------


def _world_state(world: FuzzWorld) -> tuple[list[tuple[int, str]], int]:
    with session_scope(world.sessions) as session:
        tasks = [(t.id, t.status) for t in session.scalars(select(Task).order_by(Task.id))]
        return tasks, session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_an_invalid_request_answer_matches_the_published_422_schema(fuzz_world: FuzzWorld) -> None:
    """FastAPI documented {"detail": [..]} for 422 on every operation while the app answers {"detail": str,
    "errors": [{"field", "message"}]}: every answer broke the schema. Every /api operation now publishes the
    shape it sends."""
    spec = fuzz_world.schema.raw_schema
    # Every /api operation that takes a parameter or a body can answer 422, and says so with the app's shape.
    takes_input = [op for path, methods in spec["paths"].items() if path.startswith("/api/")
                   for op in methods.values() if op.get("parameters") or op.get("requestBody")]
    refs = [op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"] for op in takes_input]
    assert refs and set(refs) == {"#/components/schemas/InvalidRequest"}
    answer = requests.post(f"{fuzz_world.base_url}/api/tasks/{fuzz_world.known['task_id']}/skip", json={"reason": ""},
                           headers=bearer(fuzz_world.tokens["reader2"]), timeout=10)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "invalid request",
                             "errors": [{"field": "body.reason", "message": "String should have at least 1 character"}]}


OVERSIZED = str(2**63)  # beyond SQLite's INTEGER too: the driver raised OverflowError, answered with a 500


@pytest.mark.parametrize("who", ["admin1", "reader2"])
def test_row_ids_beyond_an_integer_column_are_422_naming_the_range(fuzz_world: FuzzWorld, who: str) -> None:
    before = _world_state(fuzz_world)
    # (method, path, body, staff only): a reader is refused by role before the id is looked at.
    doors = [("GET", f"/api/tasks/{OVERSIZED}", None, False), ("POST", f"/api/tasks/{OVERSIZED}/submit", None, False),
             ("POST", f"/api/tasks/{OVERSIZED}/skip", {"reason": "poor quality"}, False),
             ("POST", f"/api/tasks/{OVERSIZED}/note", {"text": "a note"}, False),
             ("GET", f"/api/tasks/{OVERSIZED}/annotations", None, False),
             ("GET", f"/api/tasks/{OVERSIZED}/comments", None, False),
             ("POST", f"/api/tasks/{OVERSIZED}/comments", {"body": "a comment"}, False),
             ("GET", f"/api/tasks/{OVERSIZED}/changes", None, False),
             ("POST", f"/api/review/tasks/{OVERSIZED}/approve", None, True),
             ("POST", f"/api/review/tasks/{OVERSIZED}/reject", {"reason": "wrong label"}, True),
             ("GET", f"/api/items/{OVERSIZED}/final-label", None, True),
             ("POST", f"/api/ingest/quarantine/{OVERSIZED}/release", None, True),
             ("DELETE", f"/api/ingest/quarantine/{OVERSIZED}", None, True)]
    too_large = f"Input should be less than or equal to {MAX_ROW_ID}"
    for method, path, body, staff_only in doors:
        answer = requests.request(method, fuzz_world.base_url + path, json=body,
                                  headers=bearer(fuzz_world.tokens[who]), timeout=10)
        if staff_only and who == "reader2":
            assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
            continue
        assert answer.status_code == 422, (method, path, answer.status_code, answer.text)
        [error] = answer.json()["errors"]
        assert error["field"].startswith("path.") and error["message"] == too_large, (method, path, error)
    assert _world_state(fuzz_world) == before


def test_an_oversized_item_id_in_an_assignment_is_422(fuzz_world: FuzzWorld) -> None:
    before = _world_state(fuzz_world)
    answer = requests.post(f"{fuzz_world.base_url}/api/tasks/assign", headers=bearer(fuzz_world.tokens["admin1"]),
                           json={"project": "liver-review", "item_id": 2**63, "reader": "reader2"}, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "body.item_id",
                                        "message": f"Input should be less than or equal to {MAX_ROW_ID}"}]
    assert _world_state(fuzz_world) == before


@pytest.mark.parametrize("fixes", [OVERSIZED, "²"])
def test_a_fixes_parameter_that_is_no_row_id_is_422(fuzz_world: FuzzWorld, fixes: str) -> None:
    """`fixes` passed str.isdigit(), which "²" passes too (int() refuses it) and 2**63 (the driver overflows)."""
    before = _world_state(fuzz_world)
    answer = requests.post(f"{fuzz_world.base_url}/api/tasks/{fuzz_world.known['task_id']}/annotations",
                           params={"fixes": fixes}, json={"answers": {"lesion_present": "yes"}},
                           headers=bearer(fuzz_world.tokens["reader2"]), timeout=10)
    assert answer.status_code == 422
    assert answer.json() == {"detail": f"fixes must be a read task id between 1 and {MAX_ROW_ID}, not {fixes!r}"}
    assert _world_state(fuzz_world) == before


@pytest.mark.parametrize("reference", [OVERSIZED, "²", "0"])
def test_numeric_project_and_snapshot_references_must_be_row_ids(fuzz_world: FuzzWorld, reference: str) -> None:
    """Project and snapshot references are slugs, names or ids; the services take str.isdigit() ones as ids."""
    before = _world_state(fuzz_world)
    admin = bearer(fuzz_world.tokens["admin1"])
    message = f"Value error, a numeric id must be ASCII digits between 1 and {MAX_ROW_ID}"
    doors = [("GET", f"/api/projects/{reference}/snapshots", None, "path.project"),
             ("POST", f"/api/projects/{reference}/snapshots", {"include_test": False}, "path.project"),
             ("GET", f"/api/snapshots/{reference}", None, "path.snapshot"),
             ("GET", f"/api/snapshots/{reference}/download", None, "path.snapshot"),
             ("GET", f"/api/snapshots/liver-review@1/diff/{reference}", None, "path.other"),
             ("GET", f"/api/projects/{reference}/test-access", None, "path.project_id"),
             ("POST", f"/api/projects/{reference}/test-access", {"username": "reader2", "reason": "audit"},
              "path.project_id"),
             ("DELETE", f"/api/projects/{reference}/test-access/reader2", None, "path.project_id"),
             ("GET", f"/api/exports/log?project={reference}", None, "query.project")]
    for method, path, body, field_name in doors:
        answer = requests.request(method, fuzz_world.base_url + path, json=body, headers=admin, timeout=10)
        assert answer.status_code == 422, (method, path, answer.status_code, answer.text)
        assert answer.json()["errors"] == [{"field": field_name, "message": message}], (method, path)
    assert _world_state(fuzz_world) == before


NUL_REJECTED = "Value error, must not contain NUL (0x00) characters"


def test_text_with_a_nul_character_is_422_on_every_database(fuzz_world: FuzzWorld) -> None:
    """PostgreSQL text cannot hold NUL: psycopg's DataError was a 500 (GET /api/tasks/mine?project=G%00T). Every
    text field and parameter that reaches the database refuses it, on SQLite as well, so both answer alike."""
    before = _world_state(fuzz_world)
    reader, admin = bearer(fuzz_world.tokens["reader2"]), bearer(fuzz_world.tokens["admin1"])
    task_id, read_id = fuzz_world.known["task_id"], fuzz_world.known["read_task_id"]
    doors = [(reader, "GET", "/api/tasks/mine?project=liver%00review", None, "query.project"),
             (reader, "POST", "/api/tasks/next", {"project": "liver\x00review"}, "body.project"),
             (reader, "POST", f"/api/tasks/{task_id}/skip", {"reason": "poor\x00quality"}, "body.reason"),
             (reader, "POST", f"/api/tasks/{task_id}/note", {"text": "a\x00note"}, "body.text"),
             (reader, "POST", f"/api/tasks/{task_id}/comments", {"body": "a\x00comment"}, "body.body"),
             (reader, "POST", f"/api/tasks/{task_id}/annotations", {"answers": {"lesion_present": "y\x00es"}},
              "answers.lesion_present"),  # this route validates its own body (JSON or a form)
             (reader, "GET", "/api/projects/liver%00review", None, "path.slug"),
             (admin, "POST", f"/api/review/tasks/{read_id}/reject", {"reason": "wrong\x00label"}, "body.reason"),
             (admin, "POST", "/api/tasks/assign", {"project": "liver-review", "item_id": fuzz_world.known["item_id"],
                                                   "reader": "reader\x002"}, "body.reader"),
             (admin, "POST", "/api/projects/liver-review/test-access", {"username": "reader\x002", "reason": "audit"},
              "body.username"),
             (admin, "GET", "/api/exports/log?project=liver%00review", None, "query.project"),
             ({}, "POST", "/api/auth/login", {"username": "admin\x001", "password": "a long enough password"},
              "body.username")]
    for headers, method, path, body, field_name in doors:
        answer = requests.request(method, fuzz_world.base_url + path, json=body, headers=headers, timeout=10)
        assert answer.status_code == 422, (method, path, answer.status_code, answer.text)
        assert answer.json()["errors"] == [{"field": field_name, "message": NUL_REJECTED}], (method, path)
    answer = requests.post(f"{fuzz_world.base_url}/api/projects/apply", data=b"slug: a\x00b\n", headers=admin,
                           timeout=10)
    assert answer.status_code == 400
    assert answer.json() == {"detail": "the body contains NUL (0x00) bytes; send the file as UTF-8 text"}
    assert _world_state(fuzz_world) == before


def test_page_forms_refuse_oversized_ids_and_nul_text_without_a_change(fuzz_world: FuzzWorld) -> None:
    """The page forms share the JSON doors' parameters: the same bounds, the same 422, nothing changed."""
    before = _world_state(fuzz_world)
    reader, admin = bearer(fuzz_world.tokens["reader2"]), bearer(fuzz_world.tokens["admin1"])
    task_id, read_id = fuzz_world.known["task_id"], fuzz_world.known["read_task_id"]
    too_large = f"Input should be less than or equal to {MAX_ROW_ID}"
    doors = [(reader, "GET", f"/tasks/{OVERSIZED}", None, "path.task_id", too_large),
             (reader, "POST", f"/tasks/{OVERSIZED}/skip", {"reason": "poor quality"}, "path.task_id", too_large),
             (reader, "POST", f"/tasks/{task_id}/note", {"text": "a\x00note"}, "body.text", NUL_REJECTED),
             (reader, "POST", f"/tasks/{task_id}/comments", {"body": "hello", "back": OVERSIZED}, "body.back",
              too_large),
             (admin, "POST", f"/review/reads/{OVERSIZED}/approve", {}, "path.read_task_id", too_large),
             (admin, "POST", f"/review/reads/{read_id}/reject", {"reason": "wrong\x00label"}, "body.reason",
              NUL_REJECTED),
             (admin, "POST", f"/admin/ingest/quarantine/{OVERSIZED}/release", {}, "path.quarantine_id", too_large)]
    for headers, method, path, form, field_name, message in doors:
        answer = requests.request(method, fuzz_world.base_url + path, data=form, headers=headers, timeout=10,
                                  allow_redirects=False)
        assert answer.status_code == 422, (method, path, answer.status_code, answer.text[:300])
        assert answer.json()["errors"] == [{"field": field_name, "message": message}], (method, path)
    assert _world_state(fuzz_world) == before


def test_the_snapshot_download_is_published_as_the_zip_it_sends(fuzz_world: FuzzWorld) -> None:
    """The download door was published as application/json and answered application/zip (a schema break)."""
    published = fuzz_world.schema.raw_schema["paths"]["/api/snapshots/{snapshot}/download"]["get"]["responses"]
    assert list(published["200"]["content"]) == ["application/zip"]
    answer = requests.get(f"{fuzz_world.base_url}/api/snapshots/{fuzz_world.known['snapshot']}/download",
                          headers=bearer(fuzz_world.tokens["admin1"]), timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert "manifest.json" in archive.namelist()
