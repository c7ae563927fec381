"""The world of the quality tests (no tests here): two readers, a reviewer and an admin; three items with known
catalog attributes (CT head, MR head, CT chest) stored in the real Orthanc; reads, repeats, review decisions,
SEGs of known masks and SR answers saved through the annotation service; a real consensus of the CT head reads.

Everything the expected numbers need is in the tables below (READS, MASKS, ITEMS, TRUTH); the tests compute
their expectations from these tables with their own code, never from the module under test.

Imported by tests/review/test_quality*.py, tests/review/test_intra_rater*.py and
tests/browser/test_quality_dashboard.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.annotations.service import save_measurement_report
from pacslabel.catalog.models import CatalogSeries
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review import workflow
from pacslabel.review.models import FinalSource, ReviewDecision
from pacslabel.review.quality_reading import FACTS
from pacslabel.settings import Settings
from pacslabel.tasks.models import Task
from tests.annotations.test_versions_env import protocol
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.worlds import (
    PASSWORD,
    add_study_item,
    add_users,
    bearer,
    open_task,
    save_labels,
    store_ct_study,
    user_named,
    world_database,
    world_settings,
)
from tests.projects.helpers import apply_dict, project_dict

SHAPE = (12, 64, 64)  # make_ct_series: 12 slices of 64 x 64
SEGMENTS = {"1": "Liver lesion", "2": "Cyst", "3": "Liver"}  # protocol numbering of tests.annotations protocol()
LABEL_NAMES = {1: "Liver lesion", 2: "Cyst", 3: "Liver"}
QUESTION = "lesion_present"


def _mask(*boxes: tuple[int, tuple[slice, slice, slice]]) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    for value, box in boxes:
        labels[box] = value
    return labels


S = np.s_
MASKS: dict[str, np.ndarray] = {
    "r1_ct": _mask((3, S[2:9, 20:50, 20:50]), (1, S[4:7, 25:32, 25:32])),
    "r2_ct": _mask((3, S[2:9, 22:52, 20:50]), (1, S[4:7, 26:34, 25:33])),
    "r1_ct_repeat": _mask((3, S[2:9, 21:51, 20:50]), (1, S[4:7, 25:32, 26:33])),
    "r1_mr": _mask((3, S[3:10, 10:40, 10:40])),
    "r1_mr_repeat": _mask((3, S[3:10, 12:40, 10:40]), (1, S[5:6, 20:24, 20:24])),
}


@dataclass(frozen=True)
class ItemSpec:
    split: str
    modality: str
    body_part: str
    manufacturer: str
    model: str
    institution: str


ITEMS = {
    "ct_head": ItemSpec("validation", "CT", "HEAD", "Siemens", "SOMATOM Force", "Hospital A"),
    "mr_head": ItemSpec("train", "MR", "HEAD", "GE", "Signa Premier", "Hospital B"),
    "ct_chest": ItemSpec("test", "CT", "CHEST", "Siemens", "SOMATOM Force", "Hospital A"),
}


@dataclass(frozen=True)
class ReadSpec:
    reader: str
    item: str
    purpose: str
    claimed: datetime
    seconds: int
    status: str
    decisions: tuple[tuple[str, str | None], ...]
    mask: str | None
    answer: str | None


def _at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, 0, 0, tzinfo=UTC)


READS = (
    ReadSpec("reader1", "ct_head", "read", _at(16, 10), 300, "done",
             (("reject", "incomplete segmentation"), ("approve", None)), "r1_ct", "yes"),
    ReadSpec("reader2", "ct_head", "read", _at(16, 11), 600, "done", (("approve", None),), "r2_ct", "yes"),
    ReadSpec("reader1", "mr_head", "read", _at(18, 9), 1200, "done", (("approve", None),), "r1_mr", "no"),
    # A second opinion on the MR head without a segmentation: the readers disagree on the classification.
    ReadSpec("reader2", "mr_head", "read", _at(19, 9), 800, "done", (), None, "yes"),
    ReadSpec("reader1", "ct_chest", "read", _at(23, 8), 120, "returned", (("reject", "wrong label"),), None, None),
    ReadSpec("reader1", "ct_head", "repeat", _at(24, 8), 400, "submitted", (), "r1_ct_repeat", "yes"),
    ReadSpec("reader1", "mr_head", "repeat", _at(25, 8), 900, "submitted", (), "r1_mr_repeat", "yes"),
)

# Outcome answers (ground truth) per item.
TRUTH = {"ct_head": {QUESTION: "yes"}, "mr_head": {QUESTION: "yes"}}


@dataclass
class QualityWorld:
    settings: Settings
    orthanc: OrthancClient
    sessions: sessionmaker[Session]
    project_id: int
    project_slug: str
    users: dict[str, int]
    items: dict[str, int]  # item name -> project_items.id
    tasks: dict[tuple[str, str, str], int]  # (reader, item, purpose) -> task id
    seg_versions: dict[str, int] = field(default_factory=dict)  # mask name -> annotation version id
    consensus_sop: str | None = None
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def truth_by_item_id(self) -> dict[int, dict[str, str]]:
        return {self.items[name]: answers for name, answers in TRUTH.items()}


def build_world(orthanc: RunningOrthanc, db_url: str, var_dir: Path) -> QualityWorld:
    settings = world_settings(orthanc, db_url, var_dir)
    items: dict[str, int] = {}
    tasks: dict[tuple[str, str, str], int] = {}
    with world_database(db_url) as sessions:
        with session_scope(sessions) as session:
            users, tokens = add_users(session, (("admin1", "admin"), ("rev1", "reviewer"), ("rev2", "reviewer"),
                                                ("reader1", "annotator"), ("reader2", "annotator")), password=PASSWORD)
            project = apply_dict(session, project_dict(
                slug="quality-liver", name="Quality liver",
                selection={"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]}, protocol=protocol(),
                readers_per_split={"train": 1, "validation": 2, "test": 2},
                reviewers={"users": ["rev1"]},
                review={"fractions": {"train": 1.0, "validation": 1.0, "test": 1.0}, "agreement_threshold": 0.5}))
            project_id, slug = project.id, project.slug
            for name, spec in ITEMS.items():
                datasets, study = store_ct_study(session, orthanc.client, name)
                series = session.scalar(select(CatalogSeries).where(CatalogSeries.study_id == study.id))
                assert series is not None
                series.modality, series.body_part, series.manufacturer = (spec.modality, spec.body_part,
                                                                          spec.manufacturer)
                series.model, series.institution = spec.model, spec.institution
                items[name] = add_study_item(session, project.id, study, [str(datasets[0].SeriesInstanceUID)],
                                             split=spec.split, needs_review=True, released_at=utcnow()).id
            for read in READS:
                slot = None if read.purpose == "repeat" else (0 if read.reader == "reader1" else 1)
                tasks[(read.reader, read.item, read.purpose)] = open_task(
                    session, project.id, items[read.item], users[read.reader].id, purpose=read.purpose, slot=slot,
                    protocol_version=project.protocol_version, claimed_at=read.claimed).id
            user_ids = {name: user.id for name, user in users.items()}
        world = QualityWorld(settings, orthanc.client, sessions, project_id, slug, user_ids, items, tasks,
                             headers={name: bearer(token) for name, token in tokens.items()})
        _save_reads_and_finish(world)
    return world


def _save_reads_and_finish(world: QualityWorld) -> None:
    sessions, orthanc, items, tasks, users = world.sessions, world.orthanc, world.items, world.tasks, world.users
    # Saves go through the annotation service (each save commits on its own), then the tasks get their history.
    for read in READS:
        task_id = tasks[(read.reader, read.item, read.purpose)]
        with session_scope(sessions) as session:
            if read.mask is not None:
                version = save_labels(session, orthanc, read.reader, task_id, MASKS[read.mask], SEGMENTS)
                world.seg_versions[read.mask] = version.id
        if read.answer is not None:
            with session_scope(sessions) as session:
                task = session.get(Task, task_id)
                assert task is not None
                save_measurement_report(session, orthanc, user_named(session, read.reader), task, [],
                                        {QUESTION: read.answer})
    with session_scope(sessions) as session:
        for read in READS:
            task = session.get(Task, tasks[(read.reader, read.item, read.purpose)])
            assert task is not None
            task.status = read.status
            task.submitted_at = read.claimed + timedelta(seconds=read.seconds)
            for offset, (decision, reason) in enumerate(read.decisions):
                session.add(ReviewDecision(task_id=task.id, reviewer_id=users["rev1"], decision=decision,
                                           reason=reason, created_at=task.submitted_at + timedelta(minutes=offset)))
        # The CT head item: a real consensus of the two reads (majority vote; the consensus SEG is in Orthanc).
        versions = [session.get(AnnotationVersion, world.seg_versions[m]) for m in ("r1_ct", "r2_ct")]
        item = session.get(ProjectItem, items["ct_head"])
        assert item is not None and all(v is not None for v in versions)
        row = workflow.compute_consensus(session, orthanc, item, user_named(session, "rev1"),
                                         versions)  # type: ignore[arg-type]
        world.consensus_sop = row.sop_instance_uid
        workflow.set_final_label(session, item.id, FinalSource.CONSENSUS, user_named(session, "rev1"),
                                 consensus_id=row.id)
        workflow.set_final_label(session, items["mr_head"], FinalSource.SINGLE_READ, user_named(session, "rev1"),
                                 annotation_version_id=world.seg_versions["r1_mr"])


def import_truth(world: QualityWorld) -> None:
    """TRUTH as an outcomes file keyed by the pseudonymous patient, through the ground-truth import."""
    from pacslabel.catalog.models import CatalogPatient
    from pacslabel.deid.pseudonyms import Pseudonymizer
    from pacslabel.projects.models import Project
    from pacslabel.review.ground_truth import import_outcomes

    with session_scope(world.sessions) as session:
        lines = ["patient,question,answer"]
        for name, answers in TRUTH.items():
            item = session.get(ProjectItem, world.items[name])
            assert item is not None
            patient = session.get(CatalogPatient, item.patient_id)
            assert patient is not None
            lines += [f"{patient.pseudonym},{question},{answer}" for question, answer in answers.items()]
        project = session.get(Project, world.project_id)
        assert project is not None
        import_outcomes(session, project, ("\n".join(lines) + "\n").encode(), "outcomes.csv",
                        user_named(session, "admin1"), Pseudonymizer(b"test-pseudonym-key"))


@pytest.fixture
def quality_world(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[QualityWorld]:
    FACTS.clear()  # the fact cache is per process: each world starts cold
    world = build_world(orthanc, db_url, tmp_path / "var")
    import_truth(world)
    yield world
    FACTS.clear()
