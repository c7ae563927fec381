"""A released world for the ML-access tests, built the way the service builds it: real SEGs saved by readers
into a real Orthanc (``save_label_array``), a consensus computed by the review workflow, final labels set by
``set_final_label``. No test here; imported by tests/export/test_ml_*.py.

Four items of one project, one study each (12 x 64 x 64 CT from ``store_ct_study``):

    train       reader1 saves a draft, then the final version (single read; the draft shares its series);
    validation  reader1 and reader2 read; the final label is their consensus (majority of 2 = intersection);
    test        reader1 reads (single read): sealed for the ML role until an admin grants access;
    unreleased  reader2 reads; no final label yet: invisible to the ML role.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review import workflow
from pacslabel.review.models import FinalLabel, FinalSource
from pacslabel.tasks.models import Task
from pacslabel.users.models import User
from tests.annotations.test_versions_env import protocol
from tests.fixtures.worlds import add_study_item, add_users, open_task, save_labels, store_ct_study, world_database
from tests.projects.helpers import apply_dict, project_dict

SHAPE = (12, 64, 64)  # store_ct_study's CT: 12 slices of 64 x 64
SEGMENTS = {"1": "Liver lesion", "2": "Cyst", "3": "Liver"}
USERS = (("admin1", "admin"), ("reader1", "annotator"), ("reader2", "annotator"), ("ml1", "ml"), ("ml2", "ml"))
SPLITS = {"train": "train", "validation": "validation", "test": "test", "unreleased": "train"}
# Release times far apart, so that a ReleasedSince between them separates the items whatever the clock.
RELEASED_AT = {"train": datetime(2026, 1, 10, 9, 0), "validation": datetime(2026, 3, 1, 12, 30),
               "test": datetime(2026, 5, 20, 8, 0)}


def mask(seed: int) -> np.ndarray:
    """A label array with a liver (3), a lesion (1) and a cyst (2) placed by ``seed``."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:10, 12 + seed:48 + seed, 14:50] = 3
    labels[4:8, 20 + seed:28 + seed, 20:27] = 1
    labels[6:9, 36:40, 30 + seed:36 + seed] = 2
    return labels


@dataclass
class ItemFacts:
    name: str
    item_id: int
    split: str
    study: str
    source_series: str
    source: SourceSeries
    datasets: list[Any]
    # What the ML role may see of the item once released: the final label object and its array.
    final_series: str | None = None
    final_sop: str | None = None
    final_array: np.ndarray | None = None
    # Everything else stored for the item (drafts, individual reads): SEG (series, sop) never shown to ML.
    hidden: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MlWorld:
    sessions: sessionmaker[Session]
    orthanc: OrthancClient
    project_id: int
    project_slug: str
    tokens: dict[str, str]
    items: dict[str, ItemFacts]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def released(self, *names: str) -> set[str]:
        """Final label series of the named items."""
        return {s for n in names if (s := self.items[n].final_series) is not None}


def _save(session: Session, orthanc: OrthancClient, user: User, task_id: int, labels: np.ndarray
          ) -> AnnotationVersion:
    return save_labels(session, orthanc, user.username, task_id, labels, SEGMENTS)


@contextmanager
def ml_world(orthanc: OrthancClient, db_url: str, *, slug: str = "ml-liver",
             export: dict[str, Any] | None = None) -> Iterator[MlWorld]:
    """Build the world on a migrated database; yields it (the engine is disposed afterwards)."""
    with world_database(db_url) as sessions:
        yield _build(sessions, orthanc, slug, export)


def _build(sessions: sessionmaker[Session], orthanc: OrthancClient, slug: str, export: dict[str, Any] | None
           ) -> MlWorld:
    items: dict[str, ItemFacts] = {}
    with session_scope(sessions) as session:
        users, tokens = add_users(session, USERS)
        extra = {"export": export} if export is not None else {}
        project = apply_dict(session, project_dict(
            slug=slug, name="ML liver", selection={"item": "study", "routes": ["liver-ct"], "modalities": ["CT"]},
            protocol=protocol(), **extra))
        project_id = project.id
        tasks: dict[tuple[str, str], int] = {}
        for name, split in SPLITS.items():
            datasets, study = store_ct_study(session, orthanc, f"ML-{name}")
            item = add_study_item(session, project.id, study, [str(datasets[0].SeriesInstanceUID)], split=split,
                                  released_at=utcnow())
            items[name] = ItemFacts(name, item.id, split, study.study_instance_uid,
                                    str(datasets[0].SeriesInstanceUID), SourceSeries.from_instances(datasets),
                                    datasets)
            readers = ("reader1", "reader2") if name == "validation" else (
                ("reader2",) if name == "unreleased" else ("reader1",))
            for slot, reader in enumerate(readers):
                tasks[(name, reader)] = open_task(session, project.id, item.id, users[reader].id, slot=slot,
                                                  protocol_version=project.protocol_version,
                                                  claimed_at=utcnow()).id

        train = items["train"]
        draft = _save(session, orthanc, users["reader1"], tasks[("train", "reader1")], mask(0) * (mask(0) == 3))
        final = _save(session, orthanc, users["reader1"], tasks[("train", "reader1")], mask(0))
        assert draft.series_instance_uid == final.series_instance_uid  # one series per task: drafts beside
        train.hidden.append((draft.series_instance_uid, draft.sop_instance_uid))
        train.final_series, train.final_sop, train.final_array = (final.series_instance_uid,
                                                                  final.sop_instance_uid, mask(0))
        workflow.set_final_label(session, train.item_id, FinalSource.SINGLE_READ, users["admin1"],
                                 annotation_version_id=final.id)

        validation = items["validation"]
        read1 = _save(session, orthanc, users["reader1"], tasks[("validation", "reader1")], mask(1))
        read2 = _save(session, orthanc, users["reader2"], tasks[("validation", "reader2")], mask(3))
        validation.hidden += [(read1.series_instance_uid, read1.sop_instance_uid),
                              (read2.series_instance_uid, read2.sop_instance_uid)]
        item = session.get(ProjectItem, validation.item_id)
        assert item is not None
        consensus = workflow.compute_consensus(session, orthanc, item, users["admin1"], [read1, read2])
        assert consensus.series_instance_uid and consensus.sop_instance_uid
        validation.final_series, validation.final_sop = consensus.series_instance_uid, consensus.sop_instance_uid
        votes = (mask(1)[None] == np.arange(1, 4)[:, None, None, None]).astype(int) + \
            (mask(3)[None] == np.arange(1, 4)[:, None, None, None]).astype(int)
        expected = np.zeros(SHAPE, np.uint8)
        for label in (1, 2, 3):  # majority of two readers: both drew it
            expected[votes[label - 1] >= 2] = label
        validation.final_array = expected
        workflow.set_final_label(session, validation.item_id, FinalSource.CONSENSUS, users["admin1"],
                                 consensus_id=consensus.id)

        test = items["test"]
        sealed = _save(session, orthanc, users["reader1"], tasks[("test", "reader1")], mask(5))
        test.final_series, test.final_sop, test.final_array = (sealed.series_instance_uid,
                                                               sealed.sop_instance_uid, mask(5))
        workflow.set_final_label(session, test.item_id, FinalSource.SINGLE_READ, users["admin1"],
                                 annotation_version_id=sealed.id)

        pending = _save(session, orthanc, users["reader2"], tasks[("unreleased", "reader2")], mask(2))
        items["unreleased"].hidden.append((pending.series_instance_uid, pending.sop_instance_uid))

        # Reads are finished (approved): individual reads of released items exist as the project may show them.
        for task_id in tasks.values():
            task = session.get(Task, task_id)
            assert task is not None
            task.status, task.finished_at = "done", utcnow()
        for name, at in RELEASED_AT.items():
            row = session.scalar(select(FinalLabel).where(FinalLabel.item_id == items[name].item_id))
            assert row is not None
            row.updated_at = at.replace(tzinfo=utcnow().tzinfo)
    return MlWorld(sessions, orthanc, project_id, slug, tokens, items)


def between(first: str, second: str) -> datetime:
    """A time after ``first``'s release and before ``second``'s."""
    return RELEASED_AT[first] + (RELEASED_AT[second] - RELEASED_AT[first]) / 2 + timedelta(0)
