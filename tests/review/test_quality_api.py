"""The quality API and page through the real app: JSON equals the report function, CSV equals JSON, who may
see what (admins all, reviewers their projects, readers 403), and hostile parameters get precise 4xx."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pacslabel.db import session_scope
from pacslabel.review import quality
from pacslabel.review.quality_routes import reader_rows
from pacslabel.web.app import create_app
from tests.review.test_quality_world import PASSWORD, QualityWorld, quality_world  # noqa: F401

pytestmark = [pytest.mark.orthanc, pytest.mark.postgres]


@pytest.fixture
def client(quality_world: QualityWorld) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(quality_world.settings)) as test_client:
        yield test_client


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _same(json_value: Any, csv_value: str) -> bool:
    if json_value is None:
        return csv_value == ""
    if isinstance(json_value, float):
        return float(csv_value) == pytest.approx(json_value, abs=1e-12)
    return str(json_value) == csv_value


def test_reader_json_is_the_report_and_csv_holds_the_same_numbers(quality_world: QualityWorld,  # noqa: F811
                                                                  client: TestClient) -> None:
    world = quality_world
    answer = client.get("/api/quality/readers", headers=world.headers["admin1"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    with session_scope(world.sessions) as session:
        direct = quality.reader_quality(session, world.orthanc, project_ids=[world.project_id])
    assert {k: v for k, v in body.items() if k != "projects"} == json.loads(json.dumps(direct))
    assert body["projects"] == [{"id": world.project_id, "slug": world.project_slug}]

    download = client.get("/api/quality/readers?format=csv", headers=world.headers["admin1"])
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = _csv(download.text)
    header, expected_rows = reader_rows(body)
    assert list(rows[0]) == header and len(rows) == len(expected_rows)
    for reader in body["readers"]:
        groups = [("overall", "all", reader["overall"])]
        groups += [(d, g["group"], g) for d in body["dimensions"] for g in reader["breakdowns"][d]]
        for dimension, group, values in groups:
            [row] = [r for r in rows if (r["reader"], r["dimension"], r["group"]) ==
                     (reader["username"], dimension, group)]
            for column in quality.METRIC_COLUMNS:
                assert _same(values[column], row[column]), (reader["username"], dimension, group, column)


def test_project_json_and_csv(quality_world: QualityWorld, client: TestClient) -> None:  # noqa: F811
    world = quality_world
    answer = client.get(f"/api/quality/projects/{world.project_id}", headers=world.headers["rev1"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["project"]["slug"] == world.project_slug
    download = client.get(f"/api/quality/projects/{world.project_id}?format=csv", headers=world.headers["rev1"])
    assert download.status_code == 200
    rows = _csv(download.text)
    for split, data in body["splits"].items():
        [items] = [r for r in rows if r["split"] == split and r["category"] == "items"]
        assert int(items["items"]) == data["items"]
        for name, count in data["manufacturers"].items():
            [row] = [r for r in rows if (r["split"], r["category"], r["key"]) == (split, "manufacturer", name)]
            assert int(row["items"]) == count
        for label, values in data["labels"].items():
            [row] = [r for r in rows if (r["split"], r["category"], r["key"]) == (split, "label", label)]
            assert int(row["items"]) == values["items"]
            assert _same(values["mean_volume_ml"], row["mean_volume_ml"])


def test_project_agreement_json_is_the_report_and_csv_holds_the_same_numbers(
        quality_world: QualityWorld, client: TestClient) -> None:  # noqa: F811
    world = quality_world
    body = client.get(f"/api/quality/projects/{world.project_id}", headers=world.headers["rev1"]).json()
    from pacslabel.projects.models import Project

    with session_scope(world.sessions) as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        direct = quality.project_quality(session, world.orthanc, project)
    assert body == json.loads(json.dumps(direct))
    agreement = body["agreement"]
    rows = _csv(client.get(f"/api/quality/projects/{world.project_id}?format=csv",
                           headers=world.headers["rev1"]).text)
    assert list(rows[0]) == ["project", "split", "category", "key", "items", "mean_volume_ml", "statistic", "value"]
    csv_cells = {(r["split"], r["category"], r["key"], r["statistic"]): r["value"] for r in rows
                 if r["category"] in ("question_agreement", "question_answers", "segment_agreement")}
    wanted: dict[tuple[str, str, str, str], Any] = {}
    for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]:
        for question, numbers in block["questions"].items():
            for stat in ("items_rated", "fleiss_raters", "fleiss_items", "fleiss_excluded", "fleiss_kappa",
                         "krippendorff_alpha"):
                wanted[(split, "question_agreement", question, stat)] = numbers[stat]
            for answer, n in numbers["answers"].items():
                wanted[(split, "question_answers", question, answer)] = n
        for label, numbers in block["segments"].items():
            wanted[(split, "segment_agreement", label, "pairs")] = numbers["pairs"]
            wanted[(split, "segment_agreement", label, "hd95_infinite")] = numbers["hd95_infinite"]
            for measure in ("dice", "hd95_mm"):
                for stat, value in numbers[measure].items():
                    wanted[(split, "segment_agreement", label, f"{measure}_{stat}")] = value
    assert set(csv_cells) == set(wanted)  # every JSON number is in the CSV, and nothing else
    for key, value in wanted.items():
        assert _same(value, csv_cells[key]), key
    # The numbers are there to compare: the world's readers disagree on the MR head.
    assert float(csv_cells[("all", "question_agreement", "lesion_present", "fleiss_kappa")]) == \
        pytest.approx(-1 / 3, abs=1e-12)


def test_who_sees_what(quality_world: QualityWorld, client: TestClient) -> None:  # noqa: F811
    world = quality_world
    pid = world.project_id
    # rev1 reviews the project; rev2 is a reviewer, but not of this project.
    assert [r["username"] for r in client.get("/api/quality/readers", headers=world.headers["rev1"]).json()[
        "readers"]] == ["reader1", "reader2"]
    assert client.get("/api/quality/readers", headers=world.headers["rev2"]).json()["readers"] == []
    denied = client.get(f"/api/quality/readers?project_id={pid}", headers=world.headers["rev2"])
    assert denied.status_code == 403 and "not a reviewer of project quality-liver" in denied.json()["detail"]
    assert client.get(f"/api/quality/projects/{pid}", headers=world.headers["rev2"]).status_code == 403
    # Readers never see the dashboard (their repeats are blinded), not even their own numbers.
    for path in ("/api/quality/readers", f"/api/quality/projects/{pid}"):
        answer = client.get(path, headers=world.headers["reader1"])
        assert answer.status_code == 403 and "reviewer" in answer.json()["detail"]
    assert client.get("/api/quality/readers").status_code == 401
    # The page: a login redirect, 403 for a reader, the dashboard for the reviewer.
    assert client.get("/quality", follow_redirects=False).headers["location"] == "/login"
    for name, status in (("reader1", 403), ("rev1", 200), ("admin1", 200)):
        login = client.post("/login", data={"username": name, "password": PASSWORD}, follow_redirects=False)
        assert login.status_code == 303, login.text
        page = client.get("/quality")
        assert page.status_code == status, (name, page.text[:300])
        if status == 403:
            assert "reviewers and admins" in page.text and "data-metric" not in page.text
        else:
            assert 'data-metric="consensus_dice"' in page.text and "<svg" in page.text
            assert '<a href="/quality" aria-current="page">Quality</a>' in page.text
        client.post("/logout")


def test_hostile_parameters_get_precise_errors(quality_world: QualityWorld, client: TestClient) -> None:  # noqa: F811
    world = quality_world
    admin = world.headers["admin1"]
    bad_format = client.get("/api/quality/readers?format=xlsx", headers=admin)
    assert bad_format.status_code == 400 and bad_format.json()["detail"] == "format must be 'json' or 'csv'"
    script = client.get("/api/quality/readers?format=%3Cscript%3E", headers=admin)
    assert script.status_code == 400 and "<script>" not in script.text
    long = client.get("/api/quality/readers?format=" + "x" * 100, headers=admin)
    assert long.status_code == 422 and long.json()["errors"][0]["field"] == "query.format"
    not_a_number = client.get("/api/quality/readers?project_id=abc", headers=admin)
    assert not_a_number.status_code == 422 and not_a_number.json()["errors"][0]["field"] == "query.project_id"
    missing = client.get("/api/quality/projects/999999", headers=admin)
    assert missing.status_code == 404 and missing.json()["detail"] == "no project 999999"
    for value in ("-1", "0", str(2**63)):  # ids are positive 32-bit integers: 422, never a database error
        answer = client.get(f"/api/quality/readers?project_id={value}", headers=admin)
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "query.project_id", value
    assert client.get(f"/api/quality/projects/{2**40}", headers=admin).status_code == 422
