"""What a reviewer's fix changed: per label, voxels added and removed, Dice between the reader's version and
the fix, and the slices touched, so the reader sees what was corrected and where.

A fix is a SEG version of a read task authored by someone other than the task's reader (see
annotations.service.fix_target). Versions never change, so a computed diff is kept in memory per version
(keyed by its SOP Instance UID, unique everywhere, unlike a row id).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.annotations import repository as annotation_repository
from pacslabel.annotations.models import AnnotationModality, AnnotationVersion
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import load_source, protocol_labels
from pacslabel.orthanc.client import OrthancClient
from pacslabel.review.agreement import dice
from pacslabel.review.workflow import on_protocol_numbers, source_series_uid
from pacslabel.tasks.models import Task
from pacslabel.users.models import User

_CACHE_SIZE = 128
_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_cache_lock = threading.Lock()


def label_changes(
    before: np.ndarray, after: np.ndarray, names: dict[int, str], spacing_mm: tuple[float, float, float]
) -> list[dict[str, Any]]:
    """Per label present in either array: added / removed voxels (and mL), Dice(before, after) and the
    slice indices (0-based, along the slice normal) where the label changed."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    labels = sorted({int(v) for v in np.unique(before) if v} | {int(v) for v in np.unique(after) if v})
    result = []
    for label in labels:
        old, new = before == label, after == label
        added, removed = new & ~old, old & ~new
        changed = added | removed
        slices = np.flatnonzero(changed.reshape(changed.shape[0], -1).any(axis=1))
        result.append(
            {
                "label": label,
                "name": names.get(label, str(label)),
                "voxels_before": int(old.sum()),
                "voxels_after": int(new.sum()),
                "added_voxels": int(added.sum()),
                "removed_voxels": int(removed.sum()),
                "added_ml": round(int(added.sum()) * voxel_ml, 4),
                "removed_ml": round(int(removed.sum()) * voxel_ml, 4),
                "dice": float(dice(old, new)),
                "slices_touched": [int(k) for k in slices],
            }
        )
    return result


def _diff(
    session: Session, orthanc: OrthancClient, task: Task, version: AnnotationVersion, previous: AnnotationVersion
) -> list[dict[str, Any]]:
    with _cache_lock:
        cached = _cache.get(version.sop_instance_uid)
    if cached is not None:
        return cached
    item = annotation_repository.item_of(session, task)
    study_uid = annotation_repository.study_uid_of(session, item)
    protocol = protocol_labels(annotation_repository.protocol_of(session, task))
    old_seg = orthanc.retrieve_instance(study_uid, previous.series_instance_uid, previous.sop_instance_uid)
    new_seg = orthanc.retrieve_instance(study_uid, version.series_instance_uid, version.sop_instance_uid)
    source = load_source(orthanc, item, study_uid, source_series_uid(new_seg, item))
    before = on_protocol_numbers(read_label_array(old_seg, source), old_seg, protocol)
    after = on_protocol_numbers(read_label_array(new_seg, source), new_seg, protocol)
    spacing = (float(source.spacing), float(source.pixel_spacing[0]), float(source.pixel_spacing[1]))
    names = {number: label.name for number, label in enumerate(protocol, start=1)}
    result = label_changes(before, after, names, spacing)
    with _cache_lock:
        _cache[version.sop_instance_uid] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def fixes_of_task(session: Session, orthanc: OrthancClient | None, task: Task) -> list[dict[str, Any]]:
    """The task's SEG versions saved by someone other than its reader (reviewers' fixes), oldest first, each
    with the per-label changes against the version it replaced (None without Orthanc)."""
    versions = list(
        session.scalars(
            select(AnnotationVersion)
            .where(AnnotationVersion.task_id == task.id, AnnotationVersion.modality == AnnotationModality.SEG.value)
            .order_by(AnnotationVersion.version)
        )
    )
    by_id = {v.id: v for v in versions}
    result = []
    for version in versions:
        if version.author_id == task.reader_id:
            continue
        previous = by_id.get(version.predecessor_id) if version.predecessor_id else None
        author = session.get(User, version.author_id)
        result.append(
            {
                "version_id": version.id,
                "version": version.version,
                "author": author.username if author else None,
                "author_role": version.author_role,
                "created_at": version.created_at.isoformat(),
                "sop_instance_uid": version.sop_instance_uid,
                "predecessor_id": version.predecessor_id,
                "predecessor_version": previous.version if previous else None,
                "predecessor_sop_instance_uid": previous.sop_instance_uid if previous else None,
                "labels": _diff(session, orthanc, task, version, previous) if previous and orthanc else None,
            }
        )
    return result
