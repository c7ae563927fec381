"""Queries of the export room: snapshots, the data-flow log, cached checksums of source objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.export.models import DataFlowEvent, Snapshot, SourceObjectHash
from pacslabel.review.models import ConsensusResult

_IN_CHUNK = 500  # big IN lists are split (SQLite's bound-parameter limit)
_Row = TypeVar("_Row")


def get_snapshot(session: Session, snapshot_id: int) -> Snapshot | None:
    return session.get(Snapshot, snapshot_id)


def get_snapshot_by_name(session: Session, name: str) -> Snapshot | None:
    return session.scalar(select(Snapshot).where(Snapshot.name == name))


def latest_snapshot(session: Session, project_id: int) -> Snapshot | None:
    return session.scalar(select(Snapshot).where(Snapshot.project_id == project_id)
                          .order_by(Snapshot.sequence.desc()).limit(1))


def next_sequence(session: Session, project_id: int) -> int:
    current = session.scalar(select(func.max(Snapshot.sequence)).where(Snapshot.project_id == project_id))
    return int(current or 0) + 1


def list_snapshots(session: Session, project_id: int) -> list[Snapshot]:
    return list(session.scalars(select(Snapshot).where(Snapshot.project_id == project_id)
                                .order_by(Snapshot.sequence)))


def add_snapshot(session: Session, snapshot: Snapshot) -> Snapshot:
    session.add(snapshot)
    session.flush()
    return snapshot


def add_event(session: Session, event: DataFlowEvent) -> DataFlowEvent:
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, *, project_id: int | None = None, limit: int = 200) -> list[DataFlowEvent]:
    query = select(DataFlowEvent).order_by(DataFlowEvent.id.desc()).limit(limit)
    if project_id is not None:
        query = query.join(Snapshot, DataFlowEvent.snapshot_id == Snapshot.id).where(
            Snapshot.project_id == project_id)
    return list(session.scalars(query))


def _in_chunks(session: Session, model: type[_Row], column: Any, values: Iterable[Any]) -> list[_Row]:
    """Rows of ``model`` whose ``column`` is in ``values``, queried in chunks of ``_IN_CHUNK``."""
    wanted = sorted(set(values))
    rows: list[_Row] = []
    for start in range(0, len(wanted), _IN_CHUNK):
        rows.extend(session.scalars(select(model).where(column.in_(wanted[start:start + _IN_CHUNK]))))
    return rows


def snapshot_names(session: Session, snapshot_ids: Iterable[int]) -> dict[int, str]:
    return {row.id: row.name for row in _in_chunks(session, Snapshot, Snapshot.id, snapshot_ids)}


def cached_hashes(session: Session, sop_instance_uids: Iterable[str]) -> dict[str, SourceObjectHash]:
    rows = _in_chunks(session, SourceObjectHash, SourceObjectHash.sop_instance_uid, sop_instance_uids)
    return {row.sop_instance_uid: row for row in rows}


def add_hash(session: Session, row: SourceObjectHash) -> SourceObjectHash:
    # A nested transaction: two exports hashing the same new instance at once must not fail each other.
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the other writer won; its row holds the hash of the same bytes
        existing = session.scalar(select(SourceObjectHash).where(
            SourceObjectHash.sop_instance_uid == row.sop_instance_uid))
        if existing is None:
            raise
        return existing
    return row


def annotation_versions(session: Session, version_ids: Iterable[int]) -> dict[int, AnnotationVersion]:
    return {row.id: row for row in _in_chunks(session, AnnotationVersion, AnnotationVersion.id, version_ids)}


def consensus_results(session: Session, consensus_ids: Iterable[int]) -> dict[int, ConsensusResult]:
    return {row.id: row for row in _in_chunks(session, ConsensusResult, ConsensusResult.id, consensus_ids)}
