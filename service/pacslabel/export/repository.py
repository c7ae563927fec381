"""Queries of the export room: snapshots, the data-flow log, cached checksums of source objects."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.export.models import DataFlowEvent, Snapshot, SourceObjectHash
from pacslabel.review.models import ConsensusResult

_IN_CHUNK = 500  # big IN lists are split (SQLite's bound-parameter limit)


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


def snapshot_names(session: Session, snapshot_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(snapshot_ids))
    names: dict[int, str] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        for snapshot_id, name in session.execute(select(Snapshot.id, Snapshot.name).where(Snapshot.id.in_(chunk))):
            names[snapshot_id] = name
    return names


def cached_hashes(session: Session, sop_instance_uids: Iterable[str]) -> dict[str, SourceObjectHash]:
    uids = sorted(set(sop_instance_uids))
    found: dict[str, SourceObjectHash] = {}
    for start in range(0, len(uids), _IN_CHUNK):
        chunk = uids[start:start + _IN_CHUNK]
        for row in session.scalars(select(SourceObjectHash).where(SourceObjectHash.sop_instance_uid.in_(chunk))):
            found[row.sop_instance_uid] = row
    return found


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
    ids = sorted(set(version_ids))
    found: dict[int, AnnotationVersion] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        for row in session.scalars(select(AnnotationVersion).where(AnnotationVersion.id.in_(chunk))):
            found[row.id] = row
    return found


def consensus_results(session: Session, consensus_ids: Iterable[int]) -> dict[int, ConsensusResult]:
    ids = sorted(set(consensus_ids))
    found: dict[int, ConsensusResult] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        for row in session.scalars(select(ConsensusResult).where(ConsensusResult.id.in_(chunk))):
            found[row.id] = row
    return found
