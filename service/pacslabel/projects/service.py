"""Project rules: applying a project file, syncing items from the catalog, releasing items, who may read."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from pacslabel.audit.service import record
from pacslabel.db.base import utcnow
from pacslabel.errors import Conflict, NotFound
from pacslabel.projects import repository
from pacslabel.projects.models import PatientSplit, Project, ProjectItem, ProtocolVersion
from pacslabel.projects.schema import ProjectSpec
from pacslabel.projects.selection import Unit, select_units
from pacslabel.projects.splits import assign_splits, keyed_fraction, keyed_hex
from pacslabel.projects.yaml_loading import parse_project_file
from pacslabel.users.models import User

STAGE_CALIBRATION = "calibration"
STAGE_FIRST_BATCH = "first_batch"
STAGE_CONTINUOUS = "continuous"
STAGE_RANK = {STAGE_CALIBRATION: 0, STAGE_FIRST_BATCH: 1, STAGE_CONTINUOUS: 2}


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def project_spec(project: Project) -> ProjectSpec:
    return ProjectSpec.model_validate(project.definition)


def require_project(session: Session, slug: str) -> Project:
    project = repository.get_project_by_slug(session, slug)
    if project is None:
        raise NotFound(f"no project {slug!r}")
    return project


@dataclass(frozen=True)
class ApplyResult:
    project: Project
    created: bool
    changed: bool
    protocol_version: int
    protocol_bumped: bool
    changed_sections: list[str] = field(default_factory=list)


def apply_project_file(session: Session, text: str, actor: str, filename: str = "project.yaml") -> ApplyResult:
    """Parse and apply a project file (errors name line and field)."""
    return apply_project(session, parse_project_file(text, filename), actor)


def apply_project(session: Session, spec: ProjectSpec, actor: str) -> ApplyResult:
    """Create or update a project declaratively. The same definition again changes nothing; a changed protocol
    becomes a new protocol version (old versions stay for the tasks that used them). Every apply is audited."""
    definition = spec.model_dump(mode="json")
    digest = _sha256(definition)
    protocol = definition["protocol"]
    protocol_digest = _sha256(protocol)
    project = repository.get_project_by_slug(session, spec.slug)
    if project is None:
        project = Project(slug=spec.slug, name=spec.name, active=spec.active, definition=definition,
                          definition_sha256=digest, protocol_version=1)
        session.add(project)
        session.flush()
        session.add(ProtocolVersion(project_id=project.id, version=1, protocol=protocol,
                                    protocol_sha256=protocol_digest))
        session.flush()
        record(session, actor, "project_apply", "project", project.slug, created=True, protocol_version=1)
        return ApplyResult(project, True, True, 1, False, sorted(definition))
    if project.definition_sha256 == digest:
        record(session, actor, "project_apply", "project", project.slug, changed=False,
               protocol_version=project.protocol_version)
        return ApplyResult(project, False, False, project.protocol_version, False)
    old = project.definition
    changed_sections = sorted(k for k in set(old) | set(definition) if old.get(k) != definition.get(k))
    bumped = False
    current = repository.protocol_version(session, project.id, project.protocol_version)
    if current is None or current.protocol_sha256 != protocol_digest:
        project.protocol_version += 1
        session.add(ProtocolVersion(project_id=project.id, version=project.protocol_version, protocol=protocol,
                                    protocol_sha256=protocol_digest))
        bumped = True
    project.name = spec.name
    project.active = spec.active
    project.definition = definition
    project.definition_sha256 = digest
    project.updated_at = utcnow()
    session.flush()
    record(session, actor, "project_apply", "project", project.slug, changed=True, sections=changed_sections,
           protocol_version=project.protocol_version, protocol_bumped=bumped)
    return ApplyResult(project, False, True, project.protocol_version, bumped, changed_sections)


# --- who may read -------------------------------------------------------------------------------------------

def may_read(spec: ProjectSpec, user: User) -> bool:
    return user.active and (user.role in {r.value for r in spec.readers.roles} or user.username in spec.readers.users)


def may_review(spec: ProjectSpec, user: User) -> bool:
    return user.active and (user.role in {r.value for r in spec.reviewers.roles}
                            or user.username in spec.reviewers.users)


# --- items --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncResult:
    added: int
    updated: int
    released: int
    new_patients: int


def _stratum(spec: ProjectSpec, units: list[Unit]) -> str | None:
    if spec.split.stratify_by != "manufacturer":
        return None
    # A patient's stratum is their most frequent manufacturer (ties: alphabetical), fixed at first assignment.
    counts = Counter(u.manufacturer or "unknown" for u in units)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0][:64]


def sync_project_items(session: Session, project: Project, *, quiet_s: float = 0.0) -> SyncResult:
    """Add catalog studies/series that match the project as items (idempotent; call after ingest or
    periodically). Only series without new instances for `quiet_s` seconds count, so half-received series
    are not served. New patients get their split; new items get their release stage."""
    spec = project_spec(project)
    # Two syncs at once (after ingest and a periodic one) would both add the same new items.
    repository.lock_project(session, project.id)
    now = utcnow()
    candidates = repository.series_candidates(session, routes=spec.selection.routes,
                                              received_before=now - timedelta(seconds=quiet_s) if quiet_s else None)
    units = select_units(spec.selection, candidates)
    existing = repository.items_by_unit(session, project.id)
    splits = repository.patient_splits(session, project.id)

    # 1. Splits for patients seen for the first time.
    new_patients: dict[str, list[Unit]] = {}
    patient_ids: dict[str, int] = {}
    for unit in units:
        if unit.patient_id not in splits:
            new_patients.setdefault(unit.patient_pseudonym, []).append(unit)
            patient_ids[unit.patient_pseudonym] = unit.patient_id
    existing_counts: dict[str | None, dict[str, int]] = {}
    for row in splits.values():
        per_stratum = existing_counts.setdefault(row.stratum, {})
        per_stratum[row.split] = per_stratum.get(row.split, 0) + 1
    assigned = assign_splits(spec.slug, spec.split.ratios, spec.split.stratify_by is not None,
                             [(p, _stratum(spec, u)) for p, u in new_patients.items()], existing_counts)
    for pseudonym, (split, stratum) in assigned.items():
        row = PatientSplit(project_id=project.id, patient_id=patient_ids[pseudonym], split=split.value,
                           stratum=stratum)
        session.add(row)
        splits[row.patient_id] = row

    # 2. Items: new units in keyed order (arrival order could carry clinical hints), existing ones updated.
    counts = Counter(item.stage for item in existing.values())
    added = updated = released = 0
    new_units = sorted((u for u in units if u.uid not in existing), key=lambda u: keyed_hex(spec.slug, u.uid))
    for unit in units:
        item = existing.get(unit.uid)
        if item is not None and item.series_uids != unit.series_uids:
            item.series_uids = unit.series_uids  # a late series of a study item
            updated += 1
    for unit in new_units:
        split = splits[unit.patient_id].split
        stage, release = _stage_for(spec, split, counts)
        counts[stage] += 1
        item = ProjectItem(project_id=project.id, unit=unit.kind, unit_uid=unit.uid, study_id=unit.study_id,
                           patient_id=unit.patient_id, series_uids=unit.series_uids, split=split, stage=stage,
                           order_key=keyed_hex(spec.slug, "item", unit.uid),
                           needs_review=keyed_fraction(spec.slug, "review", unit.uid)
                           < spec.review.fractions.get(split),
                           released_at=now if release else None)
        session.add(item)
        added += 1
        released += int(release)
    session.flush()
    if added or updated:
        record(session, "system", "project_sync", "project", project.slug, added=added, updated=updated,
               released=released, new_patients=len(assigned))
    return SyncResult(added, updated, released, len(assigned))


def _stage_for(spec: ProjectSpec, split: str, counts: Counter[str]) -> tuple[str, bool]:
    """Release stage of a new item and whether it is released now."""
    release = spec.release
    if split == release.calibration.split.value and counts[STAGE_CALIBRATION] < release.calibration.items:
        return STAGE_CALIBRATION, True
    if counts[STAGE_FIRST_BATCH] < release.first_batch.items:
        return STAGE_FIRST_BATCH, True
    return STAGE_CONTINUOUS, release.continuous


def release_held_items(session: Session, project: Project, count: int, actor: str) -> int:
    """Release up to `count` held items (when the project does not release continuously)."""
    if count < 1:
        raise Conflict("release at least one item")
    items = repository.held_items(session, project.id, count)
    now = utcnow()
    for item in items:
        item.released_at = now
    session.flush()
    record(session, actor, "project_release", "project", project.slug, released=len(items))
    return len(items)


def project_summary(session: Session, project: Project) -> dict[str, Any]:
    counts = repository.item_counts(session, project.id)
    by_split: Counter[str] = Counter()
    held = 0
    for (split, _stage, is_released), n in counts.items():
        by_split[split] += n
        held += 0 if is_released else n
    return {"slug": project.slug, "name": project.name, "active": project.active,
            "protocol_version": project.protocol_version, "items": sum(by_split.values()),
            "items_per_split": dict(by_split), "held_items": held}


def item_by_id(session: Session, item_id: int) -> ProjectItem:
    item = repository.get_item(session, item_id)
    if item is None:
        raise NotFound(f"no item {item_id}")
    return item
