"""What is released to ML teams: items that have a final label, with their source series and label object.

CONTRACT (shared by the ML access policy and the snapshot/export code; keep the names and fields):

- An item is *released* when it has a row in ``final_labels``. Its release time is ``FinalLabel.updated_at``.
- ``released_items(session, project_id, *, include_test)`` lists them (ordered by item id), leaving out the
  items of the ``test`` split unless ``include_test``.
- ``may_see_test_split(session, user, project_id)`` is True for admins and for users holding an active
  test-access grant on the project (grants are given and revoked by admins, and audited).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, Subquery, and_, or_, select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.export.grant_models import TestAccessGrant
from pacslabel.projects.models import ProjectItem
from pacslabel.review.models import ConsensusResult, FinalLabel
from pacslabel.users.models import Role, User

TEST_SPLIT = "test"
# Modalities of annotation objects: never an item's source series (same rule as the access policy).
ANNOTATION_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT"})


@dataclass(frozen=True)
class LabelObject:
    """The DICOM object (SEG or SR) that is an item's final label."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str  # "SEG" | "SR"
    source: str  # FinalSource value: single_read | consensus | arbitration | ground_truth
    annotation_version_id: int | None  # set when the label is a reader's/arbiter's version
    consensus_id: int | None  # set when the label is a consensus result


@dataclass(frozen=True)
class ReleasedItem:
    item_id: int
    project_id: int
    patient_pseudonym: str
    split: str  # train | validation | test
    study_instance_uid: str
    source_series_uids: tuple[str, ...]  # the item's source image series (never SEG/SR)
    labels: tuple[LabelObject, ...]  # the final label object(s); empty for an SR-less classification GT
    released_at: datetime  # FinalLabel.updated_at


def released_items(session: Session, project_id: int, *, include_test: bool) -> list[ReleasedItem]:
    return select_released(session, project_ids=[project_id],
                           test_projects=[project_id] if include_test else [])


def may_see_test_split(session: Session, user: User, project_id: int) -> bool:
    if user.role == Role.ADMIN.value:
        return True
    return project_id in test_access_projects(session, user.id)


def test_access_projects(session: Session, user_id: int) -> set[int]:
    """Projects on which the user holds an active (not revoked) test-access grant. One query."""
    return set(session.scalars(select(TestAccessGrant.project_id).distinct()
                               .where(TestAccessGrant.user_id == user_id, TestAccessGrant.revoked_at.is_(None))))


def released_filter(query: Select[Any], *, project_ids: Iterable[int] | None,
                    test_projects: Iterable[int] | None, released_since: datetime | None = None) -> Select[Any]:
    """``query`` (which joins ``FinalLabel`` and ``ProjectItem``) narrowed to the released items of
    ``project_ids`` (None: every project), the test split only for ``test_projects`` (None: every project),
    and with ``released_since`` only the items whose final label was set (or replaced) at or after it."""
    if project_ids is not None:
        query = query.where(ProjectItem.project_id.in_(list(project_ids)))
    if test_projects is not None:
        query = query.where(or_(ProjectItem.split != TEST_SPLIT,
                                and_(ProjectItem.split == TEST_SPLIT,
                                     ProjectItem.project_id.in_(list(test_projects)))))
    if released_since is not None:
        query = query.where(FinalLabel.updated_at >= released_since)
    return query


def released_scope(*, project_ids: Iterable[int] | None, test_projects: Iterable[int] | None,
                   released_since: datetime | None = None) -> Subquery:
    """The released items (``item_id``, ``project_id``, ``study_id``, ``study_instance_uid``) as a subquery,
    so that the queries that follow the main one join it in the database instead of sending IN lists of
    thousands of values in chunks."""
    return released_filter(
        select(ProjectItem.id.label("item_id"), ProjectItem.project_id, ProjectItem.study_id,
               CatalogStudy.study_instance_uid)
        .select_from(FinalLabel)
        .join(ProjectItem, FinalLabel.item_id == ProjectItem.id)
        .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id),
        project_ids=project_ids, test_projects=test_projects, released_since=released_since).subquery()


def select_released(session: Session, *, project_ids: Iterable[int] | None,
                    test_projects: Iterable[int] | None, released_since: datetime | None = None,
                    ) -> list[ReleasedItem]:
    """Released items of ``project_ids`` (None: every project), ordered by item id; items of the test split
    only for the projects in ``test_projects`` (None: every project). Three queries whatever the count.

    ``released_since`` keeps the items whose final label was set (or replaced) at or after that time.
    """
    filters = {"project_ids": project_ids, "test_projects": test_projects, "released_since": released_since}
    # Columns, not ORM entities: building thousands of entities costs more than the query.
    query = released_filter(
        select(ProjectItem.id.label("item_id"), ProjectItem.project_id, ProjectItem.split, ProjectItem.unit,
               ProjectItem.unit_uid, ProjectItem.study_id, ProjectItem.series_uids,
               CatalogStudy.study_instance_uid, CatalogPatient.pseudonym, FinalLabel.source,
               FinalLabel.updated_at,
               AnnotationVersion.id.label("version_id"),
               AnnotationVersion.study_instance_uid.label("version_study"),
               AnnotationVersion.series_instance_uid.label("version_series"),
               AnnotationVersion.sop_instance_uid.label("version_sop"),
               AnnotationVersion.modality.label("version_modality"),
               ConsensusResult.id.label("consensus_id"),
               ConsensusResult.series_instance_uid.label("consensus_series"),
               ConsensusResult.sop_instance_uid.label("consensus_sop"))
        .select_from(FinalLabel)
        .join(ProjectItem, FinalLabel.item_id == ProjectItem.id)
        .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id)
        .join(CatalogPatient, ProjectItem.patient_id == CatalogPatient.id)
        .outerjoin(AnnotationVersion, FinalLabel.annotation_version_id == AnnotationVersion.id)
        .outerjoin(ConsensusResult, FinalLabel.consensus_id == ConsensusResult.id)
        .order_by(ProjectItem.id), **filters)
    rows = session.execute(query).all()
    if not rows:
        return []
    scope = released_scope(**filters)
    sources = source_series([(row.item_id, row.unit, row.unit_uid, row.study_id, row.series_uids) for row in rows],
                            catalogue_series(session, scope), annotation_series(session, scope))
    return [ReleasedItem(item_id=row.item_id, project_id=row.project_id, patient_pseudonym=row.pseudonym,
                         split=row.split, study_instance_uid=row.study_instance_uid,
                         source_series_uids=tuple(sorted(set(sources[row.item_id]))), labels=_labels(row),
                         released_at=row.updated_at)
            for row in rows]


def _labels(row: Row[Any]) -> tuple[LabelObject, ...]:
    """The final label's object, found by what the row references rather than by its ``source`` value, so
    that a source added later (e.g. ground truth) needs no change here; a row that references no stored
    object (a classification-only ground truth) has no label object."""
    if row.version_id is not None:
        return (LabelObject(study_instance_uid=row.version_study, series_instance_uid=row.version_series,
                            sop_instance_uid=row.version_sop, modality=row.version_modality, source=row.source,
                            annotation_version_id=row.version_id, consensus_id=None),)
    if row.consensus_id is not None and row.consensus_series and row.consensus_sop:
        return (LabelObject(study_instance_uid=row.study_instance_uid, series_instance_uid=row.consensus_series,
                            sop_instance_uid=row.consensus_sop, modality="SEG", source=row.source,
                            annotation_version_id=None, consensus_id=row.consensus_id),)
    return ()


def catalogue_series(session: Session, scope: Subquery) -> Sequence[Row[Any]]:
    """(series UID, catalogue study id, modality) of every catalogued series of the released studies of
    ``scope`` (:func:`released_scope`). One query."""
    return session.execute(
        select(CatalogSeries.series_instance_uid, CatalogSeries.study_id, CatalogSeries.modality)
        .where(CatalogSeries.study_id.in_(select(scope.c.study_id)))).all()


def annotation_series(session: Session, scope: Subquery) -> set[str]:
    """Every series of ``annotation_versions`` in the released studies of ``scope``. One query."""
    return set(session.scalars(
        select(AnnotationVersion.series_instance_uid).distinct()
        .where(AnnotationVersion.study_instance_uid.in_(select(scope.c.study_instance_uid)))))


def source_series(rows: Iterable[Any], catalogue: Iterable[Any], annotation_like: set[str]
                  ) -> dict[int, list[str]]:
    """Source image series per item (rows that start with ``item_id, unit, unit_uid, study_id, series_uids``):
    its recorded list (a study item without one: the catalogue's series of the study; a series item: its unit),
    never an annotation object (a SEG/SR in the catalogue or in ``annotation_versions``: ``annotation_like``,
    which is not changed). A list may repeat a UID that the item lists twice. No query."""
    catalogued: dict[int, list[str]] = {}
    hidden = set(annotation_like)
    for series_uid, study_id, modality in catalogue:
        if (modality or "").upper() in ANNOTATION_MODALITIES:
            hidden.add(series_uid)
        else:
            catalogued.setdefault(study_id, []).append(series_uid)
    result: dict[int, list[str]] = {}
    for item_id, unit, unit_uid, study_id, series_uids, *_ in rows:
        listed = series_uids or (catalogued.get(study_id, ()) if unit == "study" else (unit_uid,))
        result[item_id] = [uid for uid in listed if uid not in hidden]
    return result
