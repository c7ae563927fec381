"""A released world for the snapshot and NIfTI tests (no tests here).

In the real Orthanc: one oblique CT-like series per study (unequal pixel spacing, rows != columns, so a swapped
axis or a wrong sign shows in the affine), stored as Part-10 bytes; reader SEGs saved through the real save
path (``save_label_array``) and, for one item, a consensus SEG built by the real review code.
In the database: users (admin, reviewer, two readers, two ML users) with bearer tokens, a project applied from a
project file, one study item per study with its split, and a final label per item (single read, or consensus
of two reads). Each item remembers the label map it must come back as, in the protocol's numbering.

Also used by ``bench/bench_export.py`` (through :func:`build_world`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.db import session_scope
from pacslabel.db.base import utcnow
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review import workflow
from pacslabel.review.models import FinalSource
from pacslabel.web.app import create_app
from tests.annotations.test_versions_env import protocol
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.series import ct_series, random_pixels
from tests.fixtures.worlds import (
    add_study_item,
    add_users,
    open_task,
    save_labels,
    store_series,
    user_named,
    world_database,
    world_settings,
)
from tests.projects.helpers import apply_dict, project_dict

# Protocol order (test_versions_env.protocol): 1 Liver lesion, 2 Cyst, 3 Liver.
PROTOCOL_NUMBERS = {"Liver lesion": 1, "Cyst": 2, "Liver": 3}
USERS = (("admin1", "admin"), ("rev1", "reviewer"), ("reader1", "annotator"), ("reader2", "annotator"),
         ("ml1", "ml"), ("ml2", "ml"))
# An oblique plane (rotated about z by 30 degrees, then tilted): direction cosines of rows and columns.
_C, _S = np.cos(np.radians(30)), np.sin(np.radians(30))
ROW_COSINES = np.array([_C, _S, 0.0])
COLUMN_COSINES = np.array([-_S * np.cos(np.radians(15)), _C * np.cos(np.radians(15)), np.sin(np.radians(15))])
PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns)
SLICE_SPACING = 2.5


@dataclass
class WorldItem:
    item_id: int
    split: str
    pseudonym: str
    study_uid: str
    series_uid: str
    datasets: list[Dataset]  # the stored source instances, in slice order
    labels: np.ndarray  # the final label map (slices, rows, columns) in protocol numbering
    label_sop: str | None = None
    source: str = FinalSource.SINGLE_READ.value

    @property
    def geometry(self) -> SourceSeries:
        return SourceSeries.from_instances(self.datasets)


@dataclass
class World:
    sessions: sessionmaker[Session]
    orthanc: OrthancClient
    project_id: int
    project_slug: str
    tokens: dict[str, str]
    items: list[WorldItem] = field(default_factory=list)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def item(self, item_id: int) -> WorldItem:
        return next(item for item in self.items if item.item_id == item_id)


def oblique_series(*, slices: int, rows: int, columns: int, seed: int, intercept: float = -1024.0) -> list[Dataset]:
    """A single-frame series on an oblique grid with its own pixel values (the header of ``make_ct_series``)."""
    return ct_series(
        slices=slices, rows=rows, columns=columns, pixels=random_pixels(seed, 0, 2000, rows, columns),
        origin=(-40.0, 12.5, 80.0), orientation=(*ROW_COSINES, *COLUMN_COSINES), pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_SPACING, rescale_intercept=intercept, series_number=2, RescaleType="HU",
        SpecificCharacterSet="ISO_IR 100", Manufacturer="pacslabel-tests", PositionReferenceIndicator="",
        PatientPosition="HFS", AcquisitionNumber=1)


def label_map(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Known masks in protocol numbering: a liver block with a lesion inside and a cyst beside it."""
    slices, rows, columns = shape
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    r0, c0 = int(rng.integers(2, rows // 3)), int(rng.integers(2, columns // 3))
    labels[1:slices - 1, r0:r0 + rows // 2, c0:c0 + columns // 2] = 3
    labels[2:slices - 2, r0 + 2:r0 + 6, c0 + 2:c0 + 5] = 1
    labels[1:3, rows - 5:rows - 2, columns - 6:columns - 2] = 2
    return labels


def create_project(sessions: sessionmaker[Session], slug: str) -> tuple[int, dict[str, str]]:
    """The project and the users (created once per database); returns (project id, tokens by user)."""
    with session_scope(sessions) as session:
        _, tokens = add_users(session, USERS, password=None, existing_ok=True)
        project = apply_dict(session, project_dict(
            slug=slug, name=f"Project {slug}", selection={"item": "study", "routes": ["export"], "modalities": ["CT"]},
            protocol=protocol(), readers_per_split={"train": 1, "validation": 1, "test": 1}))
        return project.id, tokens


def add_read(sessions: sessionmaker[Session], orthanc: OrthancClient, item_id: int, project_id: int, reader: str,
             slot: int, labels: np.ndarray, mapping: dict[str, str]) -> int:
    """A read task of ``reader`` with one saved SEG version (the real save path); returns the version id."""
    with session_scope(sessions) as session:
        task_id = open_task(session, project_id, item_id, user_named(session, reader).id, slot=slot,
                            claimed_at=utcnow()).id
    with session_scope(sessions) as session:
        return save_labels(session, orthanc, reader, task_id, labels, mapping).id


def add_released_item(world: World, split: str, name: str, *, slices: int = 6, rows: int = 24, columns: int = 32,
                      seed: int = 1, consensus: bool = False, renumbered: bool = False) -> WorldItem:
    """Store a study, read it, and give it a final label (single read, or consensus of two equal reads).

    ``renumbered``: the reader numbers segments differently from the protocol (1 = Liver, 2 = Liver lesion),
    so the export must map segment numbers to protocol numbers by label.
    """
    datasets = oblique_series(slices=slices, rows=rows, columns=columns, seed=seed)
    with session_scope(world.sessions) as session:
        study = store_series(session, world.orthanc, datasets, pseudonym=f"PSEUDO-{name}", route="export")
        item_id = add_study_item(session, world.project_id, study, [str(datasets[0].SeriesInstanceUID)], split=split,
                                 released_at=study.first_received_at).id
    expected = label_map((slices, rows, columns), seed)
    if renumbered:
        drawn = np.zeros_like(expected)
        drawn[expected == 3] = 1
        drawn[expected == 1] = 2
        mapping = {"1": "Liver", "2": "Liver lesion"}
        expected = np.where(expected == 2, 0, expected).astype(np.uint8)  # no cyst in this mapping
    else:
        drawn, mapping = expected, {"1": "Liver lesion", "2": "Cyst", "3": "Liver"}
    readers = ("reader1", "reader2") if consensus else ("reader1",)
    versions = [add_read(world.sessions, world.orthanc, item_id, world.project_id, reader, slot, drawn, mapping)
                for slot, reader in enumerate(readers)]
    with session_scope(world.sessions) as session:
        actor = user_named(session, "rev1")
        item = session.get(ProjectItem, item_id)
        assert item is not None
        if consensus:
            rows_ = [session.get(AnnotationVersion, v) for v in versions]
            result = workflow.compute_consensus(session, world.orthanc, item, actor, [r for r in rows_ if r])
            workflow.set_final_label(session, item_id, FinalSource.CONSENSUS, actor, consensus_id=result.id)
            label_sop, source = result.sop_instance_uid, FinalSource.CONSENSUS.value
        else:
            workflow.set_final_label(session, item_id, FinalSource.SINGLE_READ, actor,
                                     annotation_version_id=versions[0])
            version = session.get(AnnotationVersion, versions[0])
            assert version is not None
            label_sop, source = version.sop_instance_uid, FinalSource.SINGLE_READ.value
    world_item = WorldItem(item_id=item_id, split=split, pseudonym=f"PSEUDO-{name}",
                           study_uid=str(datasets[0].StudyInstanceUID),
                           series_uid=str(datasets[0].SeriesInstanceUID), datasets=datasets, labels=expected,
                           label_sop=label_sop, source=source)
    world.items.append(world_item)
    return world_item


def build_world(sessions: sessionmaker[Session], orthanc: OrthancClient, *, slug: str = "liver-export",
                splits: Sequence[str] = ("train", "train", "validation", "test"), slices: int = 6,
                rows: int = 24, columns: int = 32, consensus_index: int | None = 1,
                renumbered_index: int | None = 2) -> World:
    """A project with one released item per entry of ``splits``."""
    project_id, tokens = create_project(sessions, slug)
    world = World(sessions=sessions, orthanc=orthanc, project_id=project_id, project_slug=slug, tokens=tokens)
    for index, split in enumerate(splits):
        add_released_item(world, split, f"{slug}-{index}", slices=slices, rows=rows, columns=columns,
                          seed=index + 1, consensus=index == consensus_index, renumbered=index == renumbered_index)
    return world



@dataclass
class ServedWorld:
    client: TestClient
    world: World


@contextmanager
def served_world(orthanc: RunningOrthanc, db_url: str, var_dir: Path, **options: Any) -> Iterator[ServedWorld]:
    """:func:`build_world` on this test's database and the app in front of it; the engine is disposed after."""
    with world_database(db_url) as sessions:
        world = build_world(sessions, orthanc.client, **options)
        with TestClient(create_app(world_settings(orthanc, db_url, var_dir))) as client:
            yield ServedWorld(client, world)
