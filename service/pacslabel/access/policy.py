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
- the ML role sees nothing yet (403); released data comes with the export work.

Costs: :meth:`AccessPolicy.visible_studies` is one query; :meth:`AccessPolicy.grants` for a set of studies is
three queries (tasks and items, catalogue series, annotation versions) whatever the number of results, and
is cached on the policy object, which lives for one request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.errors import Forbidden
from pacslabel.projects.models import ProjectItem
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose
from pacslabel.users.models import Role, User

# Modalities of annotation objects: never shown as source series, only through annotation_versions.
ANNOTATION_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT"})
# Big IN lists are split so that no backend hits its bound-parameter limit (SQLite: 32766).
_IN_CHUNK = 500


@dataclass
class StudyGrant:
    """What one user may see of one study."""

    study_instance_uid: str
    source_series: set[str] = field(default_factory=set)
    annotation_series: set[str] = field(default_factory=set)

    @property
    def series(self) -> set[str]:
        return self.source_series | self.annotation_series

    def can_see_series(self, series_instance_uid: str) -> bool:
        return series_instance_uid in self.source_series or series_instance_uid in self.annotation_series


class AccessPolicy:
    """Access of one user, for one request. ``None`` from a ``visible_*`` method means "everything"."""

    def __init__(self, session: Session, user: User) -> None:
        self.session = session
        self.user = user
        self._studies: set[str] | None = None
        self._grants: dict[str, StudyGrant] = {}
        self._loaded: set[str] = set()

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.ADMIN.value

    def check_may_read_images(self) -> None:
        """Raise 403 for roles that have no image access at all (ML until released data exists)."""
        if self.user.role == Role.ML.value:
            raise Forbidden("the ML role has no access to images yet; released datasets come through exports")

    # Studies --------------------------------------------------------------------------------------------

    def visible_studies(self) -> set[str] | None:
        """Study Instance UIDs the user may see; None for an admin (all)."""
        if self.is_admin:
            return None
        if self._studies is None:
            if self.user.role == Role.ML.value:
                self._studies = set()
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
        # Visibility is decided per series: an annotation series belongs to one task (its UID is derived
        # from the task id), so every instance in it has the same audience. Orthanc checks that the
        # instance really belongs to the study and series of the URL.
        del sop_instance_uid
        return self.can_see_series(study_instance_uid, series_instance_uid)

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


def _chunks(values: list[str]) -> Iterable[list[str]]:
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

    def can_see_study(self, study_instance_uid: str) -> bool:
        return self.studies is None or study_instance_uid in self.studies

    def can_see_series(self, study_instance_uid: str, series_instance_uid: str) -> bool:
        if self.studies is None:
            return True
        return series_instance_uid in self.series.get(study_instance_uid, frozenset())


def take_snapshot(policy: AccessPolicy) -> AccessSnapshot:
    """All of ``policy``'s answers for its user (one query, plus three for the grants of a non-admin)."""
    studies = policy.visible_studies()
    grants = {} if studies is None else {uid: frozenset(g.series) for uid, g in policy.grants(studies).items()}
    return AccessSnapshot(user_id=policy.user.id, username=policy.user.username, role=policy.user.role,
                          studies=None if studies is None else frozenset(studies), series=grants)
