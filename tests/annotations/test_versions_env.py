"""The environment of the version/STOW tests (no tests here): the real Orthanc, a migrated database, the app
with the annotation routers, two readers each with an open task on a synthetic CT study stored in Orthanc.

Imported by tests/annotations/test_versions*.py and tests/dicomweb/test_stow*.py.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.routes import router as annotations_router
from pacslabel.annotations.seg_building import SegmentSpec, build_segmentation
from pacslabel.catalog.models import CatalogStudy
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.dicomweb.multipart import encode_multipart_related
from pacslabel.dicomweb.stow import stow_router
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.settings import Settings
from pacslabel.tasks.models import Task
from pacslabel.web.app import create_app
from tests.annotations.conftest import ABNORMAL, CYST, LIVER, NEOPLASM, ORGAN, sparse_labels
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.worlds import (
    add_study_item,
    add_users,
    bearer,
    open_task,
    store_ct_study,
    world_database,
    world_settings,
)
from tests.projects.helpers import apply_dict, project_dict

SEGMENT_SPECS = [
    SegmentSpec(1, "Liver lesion", ABNORMAL, NEOPLASM, (255, 64, 64)),
    SegmentSpec(2, "Cyst", ABNORMAL, CYST, (64, 64, 255)),
    SegmentSpec(3, "Liver", ORGAN, LIVER, (200, 160, 60)),
]


def _code(code: object) -> dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme_designator,  # type: ignore[attr-defined]
            "CodeMeaning": code.meaning}  # type: ignore[attr-defined]


def protocol() -> dict[str, object]:
    return {
        "instructions": "Outline the liver and its lesions.",
        "segments": [{"label": spec.label, "category": _code(spec.category_code), "type": _code(spec.type_code),
                      "color": "#{:02x}{:02x}{:02x}".format(*spec.color)} for spec in SEGMENT_SPECS if spec.color],
        "questions": [{"id": "lesion_present", "text": "Is a lesion present?", "answers": ["yes", "no"]}],
    }


@dataclass
class StudyFixture:
    datasets: list[Dataset]
    source: SourceSeries
    study_uid: str
    series_uid: str
    task_id: int
    reader: str


@dataclass
class Env:
    client: TestClient
    app: FastAPI
    orthanc: OrthancClient
    sessions: sessionmaker[Session]
    headers: dict[str, dict[str, str]]
    studies: dict[str, StudyFixture] = field(default_factory=dict)


def add_task(session: Session, project_id: int, protocol_version: int, study: CatalogStudy, series_uid: str,
             reader_id: int, *, purpose: str = "read", status: str = "in_progress") -> Task:
    item = session.query(ProjectItem).filter_by(project_id=project_id, unit_uid=study.study_instance_uid).first()
    if item is None:
        item = add_study_item(session, project_id, study, [series_uid], split="train", released_at=utcnow())
    return open_task(session, project_id, item.id, reader_id, purpose=purpose, status=status,
                     protocol_version=protocol_version)


def build_app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    mounted = {(getattr(r, "path", ""), tuple(sorted(getattr(r, "methods", None) or ()))) for r in app.routes}
    for router in (stow_router, annotations_router):  # until the lead mounts them in create_app
        routes = {(getattr(r, "path", ""), tuple(sorted(getattr(r, "methods", None) or ()))) for r in router.routes}
        if not routes <= mounted:
            app.include_router(router)
    return app


@pytest.fixture
def env(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[Env]:
    headers: dict[str, dict[str, str]] = {}
    studies: dict[str, StudyFixture] = {}
    with world_database(db_url) as sessions:
        with session_scope(sessions) as session:
            users, tokens = add_users(session, [("admin1", "admin"), ("reader1", "annotator"),
                                                ("reader2", "annotator")])
            headers.update({name: bearer(token) for name, token in tokens.items()})
            project = apply_dict(session, project_dict(
                slug="liver", name="Liver", selection={"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]},
                protocol=protocol()))
            for name, reader in (("A", "reader1"), ("B", "reader2")):
                datasets, study = store_ct_study(session, orthanc.client, name)
                task = add_task(session, project.id, project.protocol_version, study,
                                str(datasets[0].SeriesInstanceUID), users[reader].id)
                studies[name] = StudyFixture(datasets, SourceSeries.from_instances(datasets),
                                             study.study_instance_uid, str(datasets[0].SeriesInstanceUID), task.id,
                                             reader)
        app = build_app(world_settings(orthanc, db_url, tmp_path / "var"))
        with TestClient(app) as client:
            yield Env(client, app, orthanc.client, sessions, headers, studies)


def make_seg(study: StudyFixture, *, seg_type: str = "BINARY", labels: np.ndarray | None = None,
             author: str = "Someone^Else") -> Dataset:
    """A SEG of the study as a client would send it (its own series and UIDs)."""
    return build_segmentation(
        sparse_labels(study.source.shape) if labels is None else labels,
        study.source,
        SEGMENT_SPECS,
        series_instance_uid=str(hd.UID()),
        series_number=99,
        instance_number=1,
        author=author,
        seg_type=seg_type,  # type: ignore[arg-type]
    )


def tissue() -> Dataset:
    item = Dataset()
    item.CodeValue = "T-D0050"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Tissue"
    return item


def ohif_like(seg: Dataset) -> Dataset:
    """What OHIF 3.12.10 stores (ohif-integration notes §5.1, §6): empty PixelMeasures, placeholder codes."""
    forged = copy.deepcopy(seg)
    forged.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = [Dataset()]
    forged.StudyID = "No Study ID"
    for segment in forged.SegmentSequence:
        segment.SegmentedPropertyCategoryCodeSequence = [tissue()]
        segment.SegmentedPropertyTypeCodeSequence = [tissue()]
        segment.SegmentAlgorithmName = "OHIF Brush"
    return forged


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow(env: Env, reader: str, *parts: Dataset | bytes, study: str | None = None, quote: bool = True,
         content_type: str | None = None) -> Response:
    body, header = encode_multipart_related([p if isinstance(p, bytes) else part10(p) for p in parts], quote=quote)
    path = "/dicomweb/studies" + (f"/{study}" if study else "")
    return env.client.post(path, content=body,
                           headers={**env.headers[reader], "Content-Type": content_type or header})


def stored_file(env: Env, sop_instance_uid: str) -> bytes:
    orthanc_id = env.orthanc.find_instance(sop_instance_uid)
    assert orthanc_id is not None, f"{sop_instance_uid} is not in Orthanc"
    return env.orthanc.get_instance_file(orthanc_id)


def stored_dataset(env: Env, sop_instance_uid: str) -> Dataset:
    return dcmread(BytesIO(stored_file(env, sop_instance_uid)))


def referenced(response: Response) -> list[dict[str, object]]:
    return list(response.json()["00081199"]["Value"])


def failures(response: Response) -> list[tuple[int, str]]:
    return [(item["00081197"]["Value"][0], item["00091001"]["Value"][0])
            for item in response.json()["00081198"]["Value"]]
