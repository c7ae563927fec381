"""Catalog queries. Inserts are race-free upserts (INSERT … ON CONFLICT DO NOTHING on both backends), because
several workers record instances of the same series at the same time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pacslabel.catalog.models import CatalogInstance, CatalogPatient, CatalogSeries, CatalogStudy


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any], unique: str) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=[unique]))


def upsert_patient(session: Session, pseudonym: str, at: datetime) -> int:
    _insert_ignore(session, CatalogPatient, {"pseudonym": pseudonym, "first_received_at": at}, "pseudonym")
    return int(session.scalar(select(CatalogPatient.id).where(CatalogPatient.pseudonym == pseudonym)))


def upsert_study(session: Session, study_uid: str, patient_id: int, values: dict[str, Any], at: datetime) -> int:
    _insert_ignore(session, CatalogStudy, {"study_instance_uid": study_uid, "patient_id": patient_id,
                                           "first_received_at": at, **values}, "study_instance_uid")
    return int(session.scalar(select(CatalogStudy.id).where(CatalogStudy.study_instance_uid == study_uid)))


def upsert_series(session: Session, series_uid: str, study_id: int, values: dict[str, Any], at: datetime) -> int:
    _insert_ignore(session, CatalogSeries, {"series_instance_uid": series_uid, "study_id": study_id,
                                            "instance_count": 0, "first_received_at": at, "last_received_at": at,
                                            **values}, "series_instance_uid")
    return int(session.scalar(select(CatalogSeries.id).where(CatalogSeries.series_instance_uid == series_uid)))


def add_instance(session: Session, sop_uid: str, series_id: int, orthanc_id: str | None, at: datetime) -> bool:
    """Record an instance once; True if it is new (a redo after a crash does not count twice)."""
    if not insert_instance(session, sop_uid, series_id, orthanc_id, at):
        return False
    count_new_instances(session, series_id, 1, at, at)
    return True


def insert_instance(session: Session, sop_uid: str, series_id: int, orthanc_id: str | None, at: datetime) -> bool:
    """Insert the instance row unless it exists (ON CONFLICT DO NOTHING); True if inserted. Does not count it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not rowcount: on psycopg the rowcount of this insert is -1 whether or not a row was added.
    inserted = session.execute(
        insert(CatalogInstance.__table__)
        .values(sop_instance_uid=sop_uid, series_id=series_id, orthanc_id=orthanc_id, received_at=at)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(CatalogInstance.__table__.c.id)).first()
    return inserted is not None


def count_new_instances(session: Session, series_id: int, added: int, first: datetime, last: datetime) -> None:
    """Add `added` new instances received between `first` and `last` to the series: one UPDATE per series and
    batch, not one per instance (the worker holds SQLite's write lock while this runs)."""
    session.execute(
        update(CatalogSeries).where(CatalogSeries.id == series_id)
        .values(instance_count=CatalogSeries.instance_count + added,
                first_received_at=case((CatalogSeries.first_received_at > first, first),
                                       else_=CatalogSeries.first_received_at),
                last_received_at=case((CatalogSeries.last_received_at < last, last),
                                      else_=CatalogSeries.last_received_at))
        .execution_options(synchronize_session=False))


def landed_instances(session: Session, series_uid: str) -> int | None:
    """How many instances of a series ingest has stored in Orthanc and recorded (None: not a catalogued series).
    Recorded after the store, so never more than Orthanc holds."""
    count = session.scalar(select(CatalogSeries.instance_count)
                           .where(CatalogSeries.series_instance_uid == series_uid))
    return int(count) if count is not None else None


def list_series(session: Session, *, route: str | None = None, limit: int = 500) -> list[CatalogSeries]:
    query = select(CatalogSeries).order_by(CatalogSeries.id).limit(limit)
    if route:
        query = query.where(CatalogSeries.route == route)
    return list(session.scalars(query))


def series_by_uid(session: Session, series_uid: str) -> CatalogSeries | None:
    return session.scalar(select(CatalogSeries).where(CatalogSeries.series_instance_uid == series_uid))


def patient_of_study(session: Session, study_uid: str) -> CatalogPatient | None:
    return session.scalar(select(CatalogPatient).join(CatalogStudy, CatalogStudy.patient_id == CatalogPatient.id)
                          .where(CatalogStudy.study_instance_uid == study_uid))


def counts(session: Session) -> dict[str, int]:
    return {
        "patients": int(session.scalar(select(func.count()).select_from(CatalogPatient)) or 0),
        "studies": int(session.scalar(select(func.count()).select_from(CatalogStudy)) or 0),
        "series": int(session.scalar(select(func.count()).select_from(CatalogSeries)) or 0),
        "instances": int(session.scalar(select(func.count()).select_from(CatalogInstance)) or 0),
    }


def studies_without_accession_key(session: Session, *, after_id: int = 0, limit: int = 200) -> list[tuple[int, str]]:
    """(id, Study Instance UID) of studies catalogued before ``accession_key`` was recorded, by id."""
    return [(int(row_id), str(uid)) for row_id, uid in session.execute(
        select(CatalogStudy.id, CatalogStudy.study_instance_uid)
        .where(CatalogStudy.accession_key.is_(None), CatalogStudy.id > after_id)
        .order_by(CatalogStudy.id).limit(limit))]


def count_studies_without_accession_key(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(CatalogStudy)
                              .where(CatalogStudy.accession_key.is_(None))) or 0)


def fill_accession_key(session: Session, study_id: int, accession_key: str) -> bool:
    """Set the key of a study that has none; True if set (a value already there is never overwritten, so
    a rerun, or ingest filling it meanwhile, changes nothing)."""
    filled = session.execute(
        update(CatalogStudy).where(CatalogStudy.id == study_id, CatalogStudy.accession_key.is_(None))
        .values(accession_key=accession_key).returning(CatalogStudy.id)
        .execution_options(synchronize_session=False)).first()
    return filled is not None
