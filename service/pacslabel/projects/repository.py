"""Project queries, and the one query that reads the catalog (`series_candidates`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pacslabel.catalog.models import CatalogPatient, CatalogSeries, CatalogStudy
from pacslabel.projects.models import ClinicalRecord, PatientSplit, Project, ProjectItem, ProtocolVersion
from pacslabel.projects.selection import SeriesCandidate


def get_project(session: Session, project_id: int) -> Project | None:
    return session.get(Project, project_id)


def get_project_by_slug(session: Session, slug: str) -> Project | None:
    return session.scalar(select(Project).where(Project.slug == slug))


def lock_project(session: Session, project_id: int) -> None:
    """Serialize item syncs of one project (PostgreSQL row lock; SQLite has one writer anyway)."""
    session.execute(select(Project.id).where(Project.id == project_id).with_for_update())


def list_projects(session: Session, *, active_only: bool = False) -> list[Project]:
    query = select(Project).order_by(Project.slug)
    if active_only:
        query = query.where(Project.active.is_(True))
    return list(session.scalars(query))


def protocol_version(session: Session, project_id: int, version: int) -> ProtocolVersion | None:
    return session.scalar(select(ProtocolVersion).where(ProtocolVersion.project_id == project_id,
                                                        ProtocolVersion.version == version))


def series_candidates(session: Session, *, routes: Iterable[str] = (),
                      received_before: datetime | None = None) -> list[SeriesCandidate]:
    """Catalog series (optionally only of some routes, and only those quiet since `received_before`)."""
    query = (select(CatalogSeries.id, CatalogSeries.series_instance_uid, CatalogStudy.id,
                    CatalogStudy.study_instance_uid, CatalogPatient.id, CatalogPatient.pseudonym,
                    CatalogSeries.route, CatalogSeries.modality, CatalogSeries.body_part,
                    CatalogSeries.manufacturer, CatalogSeries.description, CatalogSeries.instance_count,
                    CatalogSeries.last_received_at)
             .join(CatalogStudy, CatalogStudy.id == CatalogSeries.study_id)
             .join(CatalogPatient, CatalogPatient.id == CatalogStudy.patient_id)
             .order_by(CatalogSeries.id))
    routes = list(routes)
    if routes:
        query = query.where(CatalogSeries.route.in_(routes))
    if received_before is not None:
        query = query.where(CatalogSeries.last_received_at <= received_before)
    return [SeriesCandidate(*row) for row in session.execute(query)]


def items_by_unit(session: Session, project_id: int) -> dict[str, ProjectItem]:
    return {item.unit_uid: item for item in
            session.scalars(select(ProjectItem).where(ProjectItem.project_id == project_id))}


def list_items(session: Session, project_id: int) -> list[ProjectItem]:
    return list(session.scalars(select(ProjectItem).where(ProjectItem.project_id == project_id)
                                .order_by(ProjectItem.id)))


def get_item(session: Session, item_id: int) -> ProjectItem | None:
    return session.get(ProjectItem, item_id)


def patient_splits(session: Session, project_id: int) -> dict[int, PatientSplit]:
    return {row.patient_id: row for row in
            session.scalars(select(PatientSplit).where(PatientSplit.project_id == project_id))}


def held_items(session: Session, project_id: int, limit: int) -> list[ProjectItem]:
    return list(session.scalars(select(ProjectItem)
                                .where(ProjectItem.project_id == project_id, ProjectItem.released_at.is_(None))
                                .order_by(ProjectItem.order_key).limit(limit)))


def item_counts(session: Session, project_id: int) -> dict[tuple[str, str, bool], int]:
    """(split, stage, released) -> number of items."""
    rows = session.execute(select(ProjectItem.split, ProjectItem.stage, ProjectItem.released_at.is_not(None),
                                  func.count())
                           .where(ProjectItem.project_id == project_id)
                           .group_by(ProjectItem.split, ProjectItem.stage, ProjectItem.released_at.is_not(None)))
    return {(split, stage, bool(released)): int(n) for split, stage, released, n in rows}


def patients_by_pseudonym(session: Session, pseudonyms: Iterable[str]) -> dict[str, int]:
    names = list(set(pseudonyms))
    if not names:
        return {}
    return {pseudonym: pid for pid, pseudonym in
            session.execute(select(CatalogPatient.id, CatalogPatient.pseudonym)
                            .where(CatalogPatient.pseudonym.in_(names)))}


def clinical_record(session: Session, project_id: int, patient_id: int) -> ClinicalRecord | None:
    return session.scalar(select(ClinicalRecord).where(ClinicalRecord.project_id == project_id,
                                                       ClinicalRecord.patient_id == patient_id))
