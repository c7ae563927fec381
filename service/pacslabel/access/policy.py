"""The one access policy every door uses (web pages, JSON API, QIDO, WADO, metadata, STOW, exports).

Rules (architecture invariant 4, blinding):

- admin: everything;
- a task gives its reader the item's study, and within it the item's *source* series
  (``ProjectItem.series_uids``; for a study item without a recorded list, every catalogued series of the
  study that is not SEG/SR) plus annotation series chosen by the task's purpose:
    read / repeat  -> the annotation series of this task only (the reader's own SEG/SR);
    review         -> its own, plus those of the *read* tasks of the item (the reads under review);
    arbitration    -> the annotation series of every task of the item (the one unblinded view);
- a SEG/SR series that is not in ``annotation_versions`` is never a source series for a non-admin (a SEG
  that arrived with the study from a clinical PACS could carry another reader's opinion);
- the ML role sees exactly the released data (``export/released.py``): the study of each released item,
  its source series and its final label object; with the project file's ``export.individual_reads`` also
  the latest version of each finished read of the item. Never drafts: when a label's series holds other
  versions too, only the released instance of it is visible (``StudyGrant.instances``). Never the items of
  the ``test`` split, unless the user holds a test-access grant on the project (``may_see_test_split``).

Costs: :meth:`AccessPolicy.visible_studies` is one query; :meth:`AccessPolicy.grants` for a set of studies is
three queries (tasks and items, catalogue series, annotation versions) whatever the number of results, and
is cached on the policy object, which lives for one request. For the ML role everything is computed at once
(:func:`compute_released_view`), in four set-based queries after the test-split grants whatever the number of
released items: the released items are joined as a subquery rather than sent as IN lists in chunks, columns
are read as plain tuples, and a label series carries per-instance restrictions only when it holds drafts. The
result (:class:`ReleasedView`, frozen) is shared by every ML user with the same test-split grants and reused
while the database's release epoch is unchanged, which is checked on every use with one statement
(``release_epoch.py``: what is seen at once, in this process and from others). An unchanged database costs an
ML request two statements; a changed one, six (``bench/bench_ml_access.py``, ``bench/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from pacslabel.access import release_epoch
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.export.released import (
    ReleasedItem,
    catalogue_series,
    released_filter,
    released_scope,
    select_released,
    source_series,
    test_access_projects,
)
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.review.models import ConsensusResult, FinalLabel
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import Role, User

# Modalities of annotation objects: never shown as source series, only through annotation_versions.
ANNOTATION_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT"})
# Big IN lists are split so that no backend hits its bound-parameter limit (SQLite: 32766).
_IN_CHUNK = 500
T = TypeVar("T")


@dataclass(slots=True)  # no per-object __dict__: the ML role holds one per released study
class StudyGrant:
    """What one user may see of one study."""

    study_instance_uid: str
    source_series: set[str] = field(default_factory=set)
    annotation_series: set[str] = field(default_factory=set)
    # Series of which only some instances are visible (ML: a released version beside its drafts); a series
    # not listed here is visible whole.
    instances: dict[str, set[str]] = field(default_factory=dict)

    @property
    def series(self) -> set[str]:
        return self.source_series | self.annotation_series

    def can_see_series(self, series_instance_uid: str) -> bool:
        return series_instance_uid in self.source_series or series_instance_uid in self.annotation_series

    def can_see_instance(self, series_instance_uid: str, sop_instance_uid: str) -> bool:
        if not self.can_see_series(series_instance_uid):
            return False
        allowed = self.instances.get(series_instance_uid)
        return allowed is None or sop_instance_uid in allowed


class AccessPolicy:
    """Access of one user, for one request. ``None`` from a ``visible_*`` method means "everything"."""

    def __init__(self, session: Session, user: User) -> None:
        self.session = session
        self.user = user
        self._studies: set[str] | None = None
        self._grants: dict[str, StudyGrant] = {}
        self._loaded: set[str] = set()
        self._ml_view: ReleasedView | None = None
        self._test_projects: frozenset[int] = frozenset()
        self._released: list[ReleasedItem] | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.ADMIN.value

    @property
    def is_ml(self) -> bool:
        return self.user.role == Role.ML.value

    def check_may_read_images(self) -> None:
        """Every role may read images, each within its grants (the ML role: released data only). Kept as
        the one place to refuse a role wholesale."""

    def released(self) -> list[ReleasedItem]:
        """The released items this ML user may see (test split only where granted); [] for other roles."""
        if not self.is_ml:
            return []
        if self._released is None:
            self.released_view()
            self._released = select_released(self.session, project_ids=None, test_projects=self._test_projects)
        return self._released

    def released_view(self) -> ReleasedView:
        """What this ML user may see (the released data; the test split where granted), computed once per
        policy, and reused across requests while the release epoch is unchanged (``release_epoch.py``)."""
        if self._ml_view is None:
            self._test_projects = frozenset(test_access_projects(self.session, self.user.id))
            self._ml_view = release_epoch.released_view(
                self.session, self._test_projects, lambda: compute_released_view(self.session, self._test_projects))
        return self._ml_view

    # Studies --------------------------------------------------------------------------------------------

    def visible_studies(self) -> set[str] | None:
        """Study Instance UIDs the user may see; None for an admin (all)."""
        if self.is_admin:
            return None
        if self._studies is None:
            if self.is_ml:
                self._studies = set(self.released_view().studies)
            else:
                self._studies = set(self.session.scalars(
                    select(CatalogStudy.study_instance_uid).distinct()
                    .join(ProjectItem, ProjectItem.study_id == CatalogStudy.id)
                    .join(Task, Task.item_id == ProjectItem.id)
                    .where(Task.reader_id == self.user.id)))
        return self._studies

    def can_see_study(self, study_instance_uid: str) -> bool:
        studies = self.visible_studies()
        return studies is None or study_instance_uid in studies

    # Series and instances -------------------------------------------------------------------------------

    def grant(self, study_instance_uid: str) -> StudyGrant | None:
        """The user's grant on one study; None for an admin (everything) — check :meth:`can_see_study`."""
        if self.is_admin:
            return None
        return self.grants([study_instance_uid]).get(study_instance_uid) or StudyGrant(study_instance_uid)

    def visible_series(self, study_instance_uid: str) -> set[str] | None:
        """Series of the study the user may see; None for an admin (all); empty for a study not visible."""
        grant = self.grant(study_instance_uid)
        return None if grant is None else grant.series

    def can_see_series(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        grant = self.grant(study_instance_uid)
        return grant is None or grant.can_see_series(series_instance_uid)

    def can_see_instance(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> bool:
        # Visibility is decided per series for readers: an annotation series belongs to one task (its UID is
        # derived from the task id), so every instance in it has the same audience. The ML role sees only the
        # released version of a label series (StudyGrant.instances). Orthanc checks that the instance really
        # belongs to the study and series of the URL.
        grant = self.grant(study_instance_uid)
        return grant is None or grant.can_see_instance(series_instance_uid, sop_instance_uid)

    def restricted_instances(self, study_instance_uid: str) -> dict[str, set[str]]:
        """Series of the study of which only some instances are visible, with those instances."""
        grant = self.grant(study_instance_uid)
        return {} if grant is None else grant.instances

    def grants(self, study_instance_uids: Iterable[str] | None = None) -> dict[str, StudyGrant]:
        """Grants of the user on the given visible studies (all visible studies when None); admins: {}."""
        if self.is_admin:
            return {}
        visible = self.visible_studies() or set()
        wanted = visible if study_instance_uids is None else set(study_instance_uids) & visible
        missing = wanted - self._loaded
        if missing:
            self._load(missing)
        return {uid: self._grants[uid] for uid in wanted if uid in self._grants}

    def _load(self, studies: set[str]) -> None:
        if self.is_ml:  # everything was computed with the visible studies: a private copy of each grant
            view = self.released_view()
            for uid in studies:
                if uid in view.series:
                    self._grants[uid] = view.grant(uid)
            self._loaded |= studies
            return
        for chunk in _chunks(sorted(studies)):
            self._load_chunk(chunk)
        self._loaded |= studies

    def _load_chunk(self, studies: list[str]) -> None:
        # 1. The user's tasks on items of these studies.
        rows = self.session.execute(
            select(Task.id, Task.purpose, ProjectItem.id, ProjectItem.unit, ProjectItem.series_uids,
                   CatalogStudy.study_instance_uid, CatalogStudy.id)
            .join(ProjectItem, Task.item_id == ProjectItem.id)
            .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id)
            .where(Task.reader_id == self.user.id, CatalogStudy.study_instance_uid.in_(studies))).all()
        if not rows:
            return
        # 2. The catalogue's series of these studies: the source series of study items that carry no explicit
        #    list, and the modality of every series (a SEG/SR is never a source series).
        catalog_series: dict[int, set[str]] = {}
        annotation_like: set[str] = set()
        for series_uid, study_id, modality in self.session.execute(
                select(CatalogSeries.series_instance_uid, CatalogSeries.study_id, CatalogSeries.modality)
                .where(CatalogSeries.study_id.in_({catalog_id for *_, catalog_id in rows}))):
            if (modality or "").upper() in ANNOTATION_MODALITIES:
                annotation_like.add(series_uid)
            else:
                catalog_series.setdefault(study_id, set()).add(series_uid)

        # 3. Every annotation series in these studies, with the task (and its item and purpose) it belongs to.
        annotations = self.session.execute(
            select(AnnotationVersion.study_instance_uid, AnnotationVersion.series_instance_uid,
                   Task.id, Task.item_id, Task.purpose)
            .distinct()
            .join(Task, AnnotationVersion.task_id == Task.id)
            .where(AnnotationVersion.study_instance_uid.in_(studies))).all()
        all_annotation_series = {series for _, series, *_ in annotations}

        own_tasks = {task_id for task_id, *_ in rows}
        reviewed_items = {item_id for _, purpose, item_id, *_ in rows if purpose == TaskPurpose.REVIEW.value}
        arbitrated_items = {item_id for _, purpose, item_id, *_ in rows
                            if purpose == TaskPurpose.ARBITRATION.value}

        for _task_id, _purpose, _item_id, _unit, series_uids, study_uid, catalog_id in rows:
            grant = self._grants.setdefault(study_uid, StudyGrant(study_uid))
            sources = set(series_uids or ()) or catalog_series.get(catalog_id, set())
            # Never let an annotation object pass as a source series (see module docstring).
            grant.source_series |= sources - all_annotation_series - annotation_like
        for study_uid, series_uid, task_id, item_id, purpose in annotations:
            if (task_id in own_tasks
                    or item_id in arbitrated_items
                    or (item_id in reviewed_items and purpose == TaskPurpose.READ.value)):
                grant = self._grants.get(study_uid)
                if grant is not None:
                    grant.annotation_series.add(series_uid)


@dataclass(frozen=True)
class ReleasedView:
    """What the ML role may see for one set of test-split grants, detached from the database. Shared between
    policies and requests (``release_epoch.py``), so never changed: :meth:`grant` hands out a private copy."""

    studies: frozenset[str]
    sources: dict[str, frozenset[str]]
    annotations: dict[str, frozenset[str]]
    series: dict[str, frozenset[str]]  # sources | annotations, per study
    instances: dict[str, dict[str, frozenset[str]]]  # only the studies with a partly visible series

    @classmethod
    def build(cls, sources: dict[str, frozenset[str]], labels: dict[str, dict[str, set[str]]],
              restricted: set[str]) -> ReleasedView:
        """From the source series and the label series (with their released instances) of each study; the
        label series in ``restricted`` hold drafts and are visible instance by instance."""
        annotations = {uid: frozenset(per_study) for uid, per_study in labels.items()}
        instances: dict[str, dict[str, frozenset[str]]] = {}
        for uid, per_study in labels.items():
            partly = {series: frozenset(sops) for series, sops in per_study.items() if series in restricted}
            if partly:
                instances[uid] = partly
        return cls(studies=frozenset(sources), sources=sources, annotations=annotations,
                   series={uid: (src | annotations[uid]) if uid in annotations else src
                           for uid, src in sources.items()},
                   instances=instances)

    def grant(self, study_instance_uid: str) -> StudyGrant:
        return StudyGrant(study_instance_uid, set(self.sources.get(study_instance_uid, ())),
                          set(self.annotations.get(study_instance_uid, ())),
                          {series: set(sops) for series, sops in self.instances.get(study_instance_uid, {}).items()})


# The ML role --------------------------------------------------------------------------------------------------

def compute_released_view(session: Session, test_projects: Iterable[int]) -> ReleasedView:
    """Everything the ML role may see with these test-split grants, at once, in four set-based queries
    whatever the number of released items: 1. the released items with their final label object (columns, not
    entities); 2. the catalogue's series of the released studies; 3. the projects' export settings; 4. every
    annotation version in those studies (with its task where a project allows individual reads). Queries 2-4
    join the released items as a subquery (no IN lists in chunks); the rest is set arithmetic on tuples."""
    filters = {"project_ids": None, "test_projects": list(test_projects)}
    # Plain tuples, unpacked by position (a Row's attribute access costs more than the rest of the work).
    rows = session.execute(released_filter(
        select(ProjectItem.id, ProjectItem.unit, ProjectItem.unit_uid, ProjectItem.study_id,
               ProjectItem.series_uids, ProjectItem.project_id, CatalogStudy.study_instance_uid,
               AnnotationVersion.id, AnnotationVersion.series_instance_uid, AnnotationVersion.sop_instance_uid,
               ConsensusResult.id, ConsensusResult.series_instance_uid, ConsensusResult.sop_instance_uid,
               AnnotationVersion.study_instance_uid)
        .select_from(FinalLabel)
        .join(ProjectItem, FinalLabel.item_id == ProjectItem.id)
        .join(CatalogStudy, ProjectItem.study_id == CatalogStudy.id)
        .outerjoin(AnnotationVersion, FinalLabel.annotation_version_id == AnnotationVersion.id)
        .outerjoin(ConsensusResult, FinalLabel.consensus_id == ConsensusResult.id), **filters)).all()
    if not rows:
        return ReleasedView.build({}, {}, set())
    scope = released_scope(**filters)
    catalogue = catalogue_series(session, scope)
    released_studies = {row[6] for row in rows}
    # Every version in the released studies: the other versions of a label's series (drafts), the finished
    # reads, and the annotation series that never count as source series. A label version recorded under
    # another study than its item's (never seen in practice) has that study searched as well.
    studies_of_labels = select(scope.c.study_instance_uid)
    if any(row[13] not in released_studies for row in rows if row[7] is not None):
        studies_of_labels = studies_of_labels.union(released_filter(
            select(AnnotationVersion.study_instance_uid).select_from(FinalLabel)
            .join(ProjectItem, FinalLabel.item_id == ProjectItem.id)
            .join(AnnotationVersion, FinalLabel.annotation_version_id == AnnotationVersion.id), **filters))
    # Finished reads are looked at only where a project file allows them (not the usual case).
    allowing = {project_id for project_id, definition in session.execute(
                select(Project.id, Project.definition).where(Project.id.in_(select(scope.c.project_id))))
                if ((definition or {}).get("export") or {}).get("individual_reads") is True}
    columns = [AnnotationVersion.study_instance_uid, AnnotationVersion.series_instance_uid,
               AnnotationVersion.sop_instance_uid]
    query = select(*columns)
    if allowing:
        query = (select(*columns, AnnotationVersion.task_id, AnnotationVersion.version, AnnotationVersion.modality,
                        Task.item_id, Task.purpose, Task.status)
                 .join(Task, AnnotationVersion.task_id == Task.id))
    versions = session.execute(
        query.where(AnnotationVersion.study_instance_uid.in_(studies_of_labels))).all()

    sources = source_series(rows, catalogue, {series for study, series, *_ in versions
                                              if study in released_studies})
    # Built straight into the frozen form (no StudyGrant per study: at 10,000 studies the objects themselves,
    # which the garbage collector scans, cost more than the queries).
    source_sets: dict[str, frozenset[str]] = {}
    labels: dict[str, dict[str, set[str]]] = {}  # study -> label series -> its released instances
    for (item_id, _unit, _unit_uid, _study_id, _listed, _project_id, study,
         version_id, version_series, version_sop, consensus_id, consensus_series, consensus_sop, _) in rows:
        known = source_sets.get(study)
        source_sets[study] = frozenset(sources[item_id]) if known is None else known.union(sources[item_id])
        if version_id is not None:
            _add_label(labels, study, version_series, version_sop)
        elif consensus_id is not None and consensus_series and consensus_sop:
            _add_label(labels, study, consensus_series, consensus_sop)
        # else: a final label that references no stored object (classification-only ground truth)
    if allowing:
        _add_individual_reads(labels, source_sets, rows, versions, allowing)
    return ReleasedView.build(source_sets, labels, _series_with_drafts(labels, versions))


def _add_label(labels: dict[str, dict[str, set[str]]], study: str, series: str, sop: str) -> None:
    per_study = labels.get(study)
    if per_study is None:
        labels[study] = {series: {sop}}
    elif series in per_study:
        per_study[series].add(sop)
    else:
        per_study[series] = {sop}


def _add_individual_reads(labels: dict[str, dict[str, set[str]]], studies: dict[str, frozenset[str]],
                          rows: Sequence[Row[Any]], versions: Sequence[Row[Any]], allowing: set[int]) -> None:
    """The latest version of each finished read of released items whose project allows it."""
    items = {row[0] for row in rows if row[5] in allowing}
    latest: dict[tuple[int, str], tuple[int, str, str, str]] = {}
    for study, series, sop, task_id, version, modality, item_id, purpose, status in versions:
        if item_id in items and purpose == TaskPurpose.READ.value and status == TaskStatus.DONE.value:
            known = latest.get((task_id, modality))
            if known is None or version > known[0]:
                latest[(task_id, modality)] = (version, study, series, sop)
    for _version, study, series, sop in latest.values():
        if study in studies:
            _add_label(labels, study, series, sop)


def _series_with_drafts(labels: dict[str, dict[str, set[str]]], versions: Sequence[Row[Any]]) -> set[str]:
    """The label series that hold other versions than their released ones (drafts): these stay restricted to
    their released instances; any other label series needs no per-instance check (the fast path of series
    retrieval). No query: ``versions`` holds every version of the released studies."""
    released: dict[str, set[str]] = {}
    for per_study in labels.values():
        for series, sops in per_study.items():
            known = released.get(series)
            released[series] = sops if known is None else known | sops
    others: set[str] = set()
    for _study, series, sop, *_ in versions:
        sops = released.get(series)
        if sops is not None and sop not in sops:
            others.add(series)
    return others


def _chunks(values: list[T]) -> Iterable[list[T]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


@dataclass(frozen=True)
class AccessSnapshot:
    """Everything one user may see, computed at once and detached from the database.

    The gateway keeps one per credential for a few seconds so that the hot path (hundreds of frame
    requests per study) needs no query. Only *positive* answers come from it: a "no" is re-checked against
    the database (a SEG saved a moment ago must show at once), so staleness can only delay a revocation.
    """

    user_id: int
    username: str
    role: str
    studies: frozenset[str] | None  # None: everything (admin)
    series: dict[str, frozenset[str]]
    # study -> series -> the only visible instances of that series (see StudyGrant.instances)
    instances: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)

    def can_see_study(self, study_instance_uid: str) -> bool:
        return self.studies is None or study_instance_uid in self.studies

    def can_see_series(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        if self.studies is None:
            return True
        return series_instance_uid in self.series.get(study_instance_uid, frozenset())

    def can_see_instance(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> bool:
        if not self.can_see_series(study_instance_uid, series_instance_uid):
            return False
        allowed = self.restricted_instances(study_instance_uid, series_instance_uid)
        return allowed is None or sop_instance_uid in allowed

    def restricted_instances(self, study_instance_uid: str, series_instance_uid: str) -> frozenset[str] | None:
        """The only visible instances of a partly visible series; None when the series is visible whole."""
        return self.instances.get(study_instance_uid, {}).get(series_instance_uid)


def take_snapshot(policy: AccessPolicy) -> AccessSnapshot:
    """All of ``policy``'s answers for its user (one query, plus three for the grants of a reader; the ML
    role's released view as it is: frozen already, and shared)."""
    if policy.is_ml:
        view = policy.released_view()
        return AccessSnapshot(user_id=policy.user.id, username=policy.user.username, role=policy.user.role,
                              studies=view.studies, series=view.series, instances=view.instances)
    studies = policy.visible_studies()
    grants = {} if studies is None else policy.grants(studies)
    return AccessSnapshot(user_id=policy.user.id, username=policy.user.username, role=policy.user.role,
                          studies=None if studies is None else frozenset(studies),
                          series={uid: frozenset(g.series) for uid, g in grants.items()},
                          instances={uid: {series: frozenset(sops) for series, sops in g.instances.items()}
                                     for uid, g in grants.items() if g.instances})
