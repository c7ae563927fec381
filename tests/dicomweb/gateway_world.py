"""A small blinded world for the gateway and access-policy tests.

In Orthanc (session fixture, shared, fresh UIDs per module):
    study S1: CT source series, reader A's SEG, reader B's SEG, a "foreign" SEG that came with the study
              (not in annotation_versions), and a second CT series not in the item (not to be shown);
    study S2: a CT series nobody has a task for.
In the database (per test): the catalogue, a project, one study item on S1 (source = the first CT series),
read tasks for A and B, a review task for the reviewer, an arbitration task for the arbiter, the two
annotation_versions rows, and users with bearer tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from pacslabel.annotations import SegmentSpec, SourceSeries, build_segmentation
from pacslabel.annotations.models import AnnotationVersion, task_series_uid
from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.dicomweb.routes import router as dicomweb_router
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import Project
from pacslabel.settings import Settings
from pacslabel.web.app import create_app
from tests.annotations.sources import make_ct_series
from tests.fixtures.orthanc import free_port
from tests.fixtures.server import serve
from tests.fixtures.worlds import add_study_item, add_users, open_task

__all__ = ["free_port", "serve"]  # re-exported: the gateway tests import them from here

LESION = Code("49755003", "SCT", "Morphologically Abnormal Structure")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
SLICES = 4
# Task ids are fixed so that the derived annotation series UIDs are known before the database exists.
TASK_IDS = {"reader_a": 11, "reader_b": 12, "reviewer": 13, "arbiter": 14}


@dataclass
class Series:
    study: str
    series: str
    sops: list[str]


@dataclass
class OrthancWorld:
    source: Series  # the item's source CT series in S1
    other_ct: Series  # a CT series of S1 that is not part of the item
    seg_a: Series
    seg_b: Series
    foreign_seg: Series
    outside: Series  # S2: nobody has a task
    source_datasets: list[Dataset] = field(default_factory=list)

    @property
    def study(self) -> str:
        return self.source.study


def _seg(source: list[Dataset], series_uid: str, author: str) -> Dataset:
    geometry = SourceSeries.from_instances(source)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[1:3, 2:6, 2:6] = 1
    return build_segmentation(labels, geometry, [SegmentSpec(1, "lesion", LESION, NEOPLASM)],
                              series_instance_uid=series_uid, series_number=300, instance_number=1,
                              author=author, series_description=f"SEG of {author}")


def build_orthanc_world(client: OrthancClient) -> OrthancWorld:
    study = generate_uid()
    source = make_ct_series(slices=SLICES, rows=16, columns=16, study_instance_uid=study, shuffle=False)
    other = make_ct_series(slices=2, rows=16, columns=16, study_instance_uid=study, shuffle=False)
    outside = make_ct_series(slices=2, rows=16, columns=16, shuffle=False)
    seg_a = _seg(source, task_series_uid(study, TASK_IDS["reader_a"], "SEG"), "reader_a")
    seg_b = _seg(source, task_series_uid(study, TASK_IDS["reader_b"], "SEG"), "reader_b")
    foreign = _seg(source, generate_uid(), "clinical")
    client.store_instances([*source, *other, *outside, seg_a, seg_b, foreign])

    def series(datasets: list[Dataset]) -> Series:
        return Series(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID),
                      [str(d.SOPInstanceUID) for d in datasets])

    return OrthancWorld(source=series(source), other_ct=series(other), seg_a=series([seg_a]),
                        seg_b=series([seg_b]), foreign_seg=series([foreign]), outside=series(outside),
                        source_datasets=source)


USERS = {"admin": "admin", "reader_a": "annotator", "reader_b": "annotator", "reader_c": "annotator",
         "reviewer": "reviewer", "arbiter": "reviewer", "ml": "ml"}


def build_database(session: Session, world: OrthancWorld) -> dict[str, str]:
    """Catalogue, project, item, tasks and annotation versions; returns bearer tokens by user name."""
    users, tokens = add_users(session, USERS.items(), password=None)  # tokens only: no password hashing
    session.flush()
    patient = CatalogPatient(pseudonym="P-gateway")
    session.add(patient)
    session.flush()
    studies = {}
    for uid in (world.study, world.outside.study):
        studies[uid] = CatalogStudy(study_instance_uid=uid, patient_id=patient.id)
        session.add(studies[uid])
    session.flush()
    for s, modality in ((world.source, "CT"), (world.other_ct, "CT"), (world.outside, "CT"),
                        (world.foreign_seg, "SEG")):
        session.add(CatalogSeries(series_instance_uid=s.series, study_id=studies[s.study].id, modality=modality,
                                  route="test", instance_count=len(s.sops)))
    project = Project(slug="gateway", name="Gateway", definition={}, definition_sha256="0" * 64)
    session.add(project)
    session.flush()
    item = add_study_item(session, project.id, studies[world.study], [world.source.series], split="train",
                          released_at=None, order_key="k")
    purposes = {"reader_a": ("read", 0), "reader_b": ("read", 1), "reviewer": ("review", 0),
                "arbiter": ("arbitration", 0)}
    for name, (purpose, slot) in purposes.items():
        open_task(session, project.id, item.id, users[name].id, purpose=purpose, slot=slot, task_id=TASK_IDS[name])
    for name, seg in (("reader_a", world.seg_a), ("reader_b", world.seg_b)):
        session.add(AnnotationVersion(
            task_id=TASK_IDS[name], study_instance_uid=seg.study, series_instance_uid=seg.series,
            sop_instance_uid=seg.sops[0], sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", modality="SEG",
            version=1, author_id=users[name].id, author_role="annotator", origin="api",
            sha256=hashlib.sha256(seg.sops[0].encode()).hexdigest(), byte_size=1, repairs=[]))
    session.flush()
    return tokens


def gateway_app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    mounted = {getattr(route, "path", "") for route in app.routes}
    if "/dicomweb/studies/{study}/series/{series}/metadata" not in mounted:  # until the lead mounts it
        app.include_router(dicomweb_router)
    return app


