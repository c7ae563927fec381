"""QIDO-RS filters on released data that Orthanc cannot answer, answered from the database:

- ``ReferencedSeries=<Series Instance UID>[,<UID>...]``: the label objects (SEG/SR series) drawn on one of
  the given source series: the final labels and reads of items whose source series it is (and, for readers
  and admins, the annotation series of every task of such items); combine with ``Modality=SEG``.
- ``ReleasedSince=<date or date-time>`` (also ``released_since``): the studies, source series and final label
  series of items whose final label was set or replaced at or after that time ("what was released since my
  last snapshot"). ISO 8601 (``2026-11-24``, ``2026-11-24T10:00:00Z``, ``...+01:00``) or DICOM DA/DT
  (``20261124``, ``20261124100000``, an open range ``20261124-``); without a zone the time is UTC.

Both narrow what the access policy shows; they never widen it. They are taken off the upstream query (Orthanc
would refuse an unknown key). :func:`scope` is the one place the gateway's QIDO asks what to show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.access.policy import AccessPolicy, StudyGrant
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.errors import BadInput
from pacslabel.export.released import select_released
from pacslabel.projects.models import ProjectItem
from pacslabel.review.models import ConsensusResult
from pacslabel.tasks.models import Task

REFERENCED_SERIES = ("referencedseries",)
RELEASED_SINCE = ("releasedsince", "released_since")
PARAMS = REFERENCED_SERIES + RELEASED_SINCE  # lower case: query keys are compared case-insensitively
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_UIDS = 100
_DICOM_DT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?)?([+-]\d{4})?$")


@dataclass(frozen=True)
class ReleaseFilters:
    referenced_series: frozenset[str] | None = None
    released_since: datetime | None = None


def parse(query: Iterable[tuple[str, str]]) -> ReleaseFilters | None:
    """The release filters of a QIDO query (None when it has none). 400 with the reason for a bad value."""
    referenced: set[str] | None = None
    since: datetime | None = None
    for key, value in query:
        name = key.lower()
        if name in REFERENCED_SERIES:
            uids = [uid.strip() for uid in re.split(r"[,\\]", value) if uid.strip()]
            if not uids:
                raise BadInput("ReferencedSeries needs one or more Series Instance UIDs")
            if len(uids) > _MAX_UIDS:
                raise BadInput(f"ReferencedSeries takes at most {_MAX_UIDS} UIDs")
            for uid in uids:
                if len(uid) > 64 or not _UID.match(uid):
                    raise BadInput(f"ReferencedSeries: {uid[:80]!r} is not a DICOM UID")
            referenced = (referenced or set()) | set(uids)
        elif name in RELEASED_SINCE:
            parsed = parse_time(value)
            since = parsed if since is None else max(since, parsed)
    if referenced is None and since is None:
        return None
    return ReleaseFilters(frozenset(referenced) if referenced is not None else None, since)


def parse_time(value: str) -> datetime:
    """An aware UTC datetime from ISO 8601 or DICOM DA/DT (an open range ``X-`` means "since X")."""
    text = value.strip()
    if text.endswith("-") and _DICOM_DT.match(text[:-1]):
        text = text[:-1]
    moment: datetime | None = None
    try:
        match = _DICOM_DT.match(text)
        if match:
            year, month, day, hour, minute, second, fraction, zone = match.groups()
            tz = None
            if zone:
                sign = -1 if zone[0] == "-" else 1
                tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
            moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                              int((fraction or "0").ljust(6, "0")), tzinfo=tz)
        elif text:
            # An unencoded "+01:00" arrives as " 01:00" (a form-encoded plus is a space).
            moment = datetime.fromisoformat(re.sub(r" (\d{2}:?\d{2})$", r"+\1", text).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None:
        raise BadInput(f"ReleasedSince: {value[:80]!r} is not a date or date-time; use ISO 8601 "
                       "(2026-11-24T10:00:00Z) or DICOM DA/DT (20261124, 20261124100000)")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def without_filters(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k.lower() not in PARAMS]


def scope(policy: AccessPolicy, study: str | None, level: str, filters: ReleaseFilters | None
          ) -> tuple[set[str], dict[str, StudyGrant]]:
    """What a QIDO search at ``level`` (below ``study`` if given) may return: the studies, and per study the
    grant (series, and instances of partly visible series). Admins get everything the filters match."""
    if policy.is_admin:
        assert filters is not None, "admins without release filters are answered by Orthanc alone"
        studies = None
    else:
        studies = set(policy.visible_studies() or set())
        if study is not None:
            studies &= {study}
    if filters is None:
        assert studies is not None
        return studies, ({} if level == "studies" else policy.grants(studies))
    matches = matching_series(policy.session, filters)
    if study is not None:
        matches = {study: matches[study]} if study in matches else {}
    if studies is None:  # admin
        return set(matches), {uid: StudyGrant(uid, annotation_series=set(series)) for uid, series in matches.items()}
    studies &= set(matches)
    grants = {}
    for uid, grant in policy.grants(studies).items():
        wanted = matches[uid]
        narrowed = StudyGrant(uid, source_series=grant.source_series & wanted,
                              annotation_series=grant.annotation_series & wanted,
                              instances={s: sops for s, sops in grant.instances.items() if s in wanted})
        if narrowed.series:
            grants[uid] = narrowed
    return set(grants), grants


def matching_series(session: Session, filters: ReleaseFilters) -> dict[str, set[str]]:
    """Study -> series matched by every given filter (before access control)."""
    found: dict[str, set[str]] | None = None
    if filters.released_since is not None:
        found = {}
        for item in select_released(session, project_ids=None, test_projects=None,
                                    released_since=filters.released_since):
            found.setdefault(item.study_instance_uid, set()).update(
                item.source_series_uids, (label.series_instance_uid for label in item.labels))
    if filters.referenced_series is not None:
        referencing = labels_referencing(session, filters.referenced_series)
        if found is None:
            found = referencing
        else:
            found = {uid: found[uid] & series for uid, series in referencing.items() if uid in found}
    return {uid: series for uid, series in (found or {}).items() if series}


def labels_referencing(session: Session, source_series: frozenset[str]) -> dict[str, set[str]]:
    """Study -> annotation series (every task's SEG/SR series and the consensus SEG) of the items whose
    source series include one of ``source_series``. Three queries."""
    candidates = session.execute(
        select(ProjectItem.id, ProjectItem.unit, ProjectItem.unit_uid, ProjectItem.series_uids,
               CatalogStudy.study_instance_uid, CatalogSeries.series_instance_uid)
        .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id)
        .join(CatalogSeries, CatalogSeries.study_id == CatalogStudy.id)
        .where(CatalogSeries.series_instance_uid.in_(sorted(source_series)))).all()
    items: dict[int, str] = {}
    for item_id, unit, unit_uid, series_uids, study_uid, series_uid in candidates:
        listed = set(series_uids or ())
        if series_uid in listed or (not listed and (unit == "study" or unit_uid == series_uid)):
            items[item_id] = study_uid
    if not items:
        return {}
    found: dict[str, set[str]] = {}
    for item_id, series in session.execute(
            select(Task.item_id, AnnotationVersion.series_instance_uid).distinct()
            .join(Task, AnnotationVersion.task_id == Task.id).where(Task.item_id.in_(sorted(items)))):
        found.setdefault(items[item_id], set()).add(series)
    for item_id, series in session.execute(
            select(ConsensusResult.item_id, ConsensusResult.series_instance_uid)
            .where(ConsensusResult.item_id.in_(sorted(items)), ConsensusResult.series_instance_uid.is_not(None))):
        found.setdefault(items[item_id], set()).add(series)
    return found


def series_access(policy: AccessPolicy, study: str, series: str, filters: ReleaseFilters | None
                  ) -> tuple[bool, set[str] | None]:
    """For a QIDO search inside one series: whether it may be shown (visible, and matched by the filters),
    and its only visible instances when it is partly visible (None: all)."""
    if filters is not None:
        _, grants = scope(policy, study, "instances", filters)
        grant = grants.get(study)
        return (grant is not None and grant.can_see_series(series)), (grant.instances.get(series) if grant else None)
    return policy.can_see_series(study, series), policy.restricted_instances(study).get(series)
