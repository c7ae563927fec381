"""Counts in QIDO answers as the user may see them.

Orthanc counts everything it holds: NumberOfStudyRelatedSeries/Instances (0020,1206/1208),
NumberOfSeriesRelatedInstances (0020,1209) and ModalitiesInStudy (0008,0061) would tell a reader how many
other readers' SEGs a study holds, and the ML role how many drafts sit beside a released label. For every
role but admin (who keeps Orthanc's values) they are recomputed from the access policy's grants and from what
the database knows of each series, with no Orthanc round trip:

- source series: ``catalog_series`` (modality, instance count as catalogued at ingest);
- annotation series: ``annotation_versions`` (one row per stored SEG/SR instance);
- consensus SEG series: ``consensus_results`` (one SEG per series), asked only for series still unknown.

A visible series that none of them knows (listed in an item, never arrived) is not counted, as Orthanc would
not count it either. A series of which only some instances are visible counts those instances.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, literal_column, select, union_all
from sqlalchemy.orm import Session

from pacslabel.access.policy import AccessPolicy, StudyGrant
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.dicomweb.filtering import (
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    STUDY_INSTANCE_UID,
    VisibleStudy,
    set_visible_counts,
    studies_with_counts,
    tag_value,
)
from pacslabel.projects.models import ProjectItem
from pacslabel.review.models import ConsensusResult

# IN lists are split so that no backend hits its bound-parameter limit.
_IN_CHUNK = 500


@dataclass(frozen=True)
class SeriesFacts:
    modality: str | None
    instances: int


def recount(policy: AccessPolicy, results: list[dict[str, Any]], study_instance_uid: str | None = None, *,
            series_from_database: bool = False) -> list[dict[str, Any]]:
    """``results`` (QIDO, any level, or metadata) with counts and ModalitiesInStudy as ``policy``'s user may
    see them.

    Admins: unchanged. No query when no result carries a count; otherwise the grants of the studies of the
    results (cached on the policy: the QIDO filter has loaded them already below study level) and, when a
    study-level count is present, one or two queries for all results together. A series visible whole
    keeps Orthanc's NumberOfSeriesRelatedInstances in QIDO; ``series_from_database`` recounts it too (in
    metadata the value is whatever the stored file carries)."""
    if policy.is_admin or not results:
        return results
    counted = studies_with_counts(results, study_instance_uid)
    series_counts = any(NUMBER_OF_SERIES_RELATED_INSTANCES in r for r in results)
    if not counted and not series_counts:
        return results
    studies = set(counted)
    if series_counts:
        with_series = {uid for r in results if NUMBER_OF_SERIES_RELATED_INSTANCES in r
                       and (uid := tag_value(r, STUDY_INSTANCE_UID) or study_instance_uid)}
        studies |= with_series
        if series_from_database:
            counted |= with_series
    grants = policy.grants(studies)
    restricted = {uid: grant.instances for uid, grant in grants.items() if grant.instances}
    return set_visible_counts(results, study_counts(policy, counted), restricted, study_instance_uid)


def study_counts(policy: AccessPolicy, studies: Collection[str]) -> dict[str, VisibleStudy]:
    """What ``policy``'s user may see of each study, counted (their grants, and one or two queries)."""
    if not studies:
        return {}
    grants = policy.grants(studies)
    facts = series_facts(policy.session, studies,
                         {series for uid in studies if (grant := grants.get(uid)) for series in grant.series})
    return {uid: visible_study(grants.get(uid) or StudyGrant(uid), facts.get(uid, {})) for uid in studies}


def visible_study(grant: StudyGrant, facts: dict[str, SeriesFacts]) -> VisibleStudy:
    """The visible series of one study that exist, with their visible instance counts and modalities."""
    instances: dict[str, int] = {}
    modalities: set[str] = set()
    for series in grant.series:
        known = facts.get(series)
        if known is None:
            continue
        only = grant.instances.get(series)
        instances[series] = len(only) if only is not None else known.instances
        if known.modality:
            modalities.add(known.modality)
    return VisibleStudy(instances=instances, modalities=frozenset(modalities))


def series_facts(session: Session, studies: Collection[str], series: Collection[str]
                 ) -> dict[str, dict[str, SeriesFacts]]:
    """Study -> series -> (modality, instances) for the given series of the given studies, from the catalogue
    and the annotation versions (which win for an annotation series); consensus SEGs for what is left."""
    found: dict[str, dict[str, SeriesFacts]] = {}
    wanted = set(series)
    for chunk in _chunks(sorted(studies)):
        # One statement: catalogue rows first, then annotation versions, so that the latter win.
        catalogued = (select(literal(0).label("source"), CatalogStudy.study_instance_uid,
                             CatalogSeries.series_instance_uid, CatalogSeries.modality,
                             CatalogSeries.instance_count.label("instances"))
                      .join(CatalogStudy, CatalogSeries.study_id == CatalogStudy.id)
                      .where(CatalogStudy.study_instance_uid.in_(chunk)))
        annotated = (select(literal(1).label("source"), AnnotationVersion.study_instance_uid,
                            AnnotationVersion.series_instance_uid, func.min(AnnotationVersion.modality),
                            func.count().label("instances"))
                     .where(AnnotationVersion.study_instance_uid.in_(chunk))
                     .group_by(AnnotationVersion.study_instance_uid, AnnotationVersion.series_instance_uid))
        for _, study, uid, modality, count in session.execute(
                union_all(catalogued, annotated).order_by(literal_column("source"))):
            if uid in wanted:
                found.setdefault(study, {})[uid] = SeriesFacts(modality, int(count or 0))
    known = {uid for per_study in found.values() for uid in per_study}
    missing = sorted(wanted - known)
    for chunk in _chunks(missing):
        for study, uid, count in session.execute(
                select(CatalogStudy.study_instance_uid, ConsensusResult.series_instance_uid, func.count())
                .join(ProjectItem, ConsensusResult.item_id == ProjectItem.id)
                .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id)
                .where(ConsensusResult.series_instance_uid.in_(chunk))
                .group_by(CatalogStudy.study_instance_uid, ConsensusResult.series_instance_uid)):
            found.setdefault(study, {})[uid] = SeriesFacts("SEG", int(count))
    return found


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]
