"""References from a derived SEG (consensus, arbitration) to the reads it came from.

The reads go into the Common Instance Reference module's StudiesContainingOtherReferencedInstancesSequence,
not into ReferencedSeriesSequence: every SEG reader here (``seg_validation``) expects that one to name the
single source series the frames are drawn on.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pacslabel.annotations.models import AnnotationModality, AnnotationVersion
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose


def reference_inputs(ds: Dataset, study_uid: str, inputs: Iterable[AnnotationVersion], description: str) -> None:
    """Name ``inputs`` (SEG/SR versions of ``study_uid``) in ``ds`` and say in ContentDescription how it was made."""
    by_series: dict[str, list[AnnotationVersion]] = {}
    for version in sorted(inputs, key=lambda v: v.id):
        by_series.setdefault(version.series_instance_uid, []).append(version)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = []
    for series_uid, members in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedInstanceSequence = []
        for version in members:
            instance = Dataset()
            instance.ReferencedSOPClassUID = version.sop_class_uid
            instance.ReferencedSOPInstanceUID = version.sop_instance_uid
            series.ReferencedInstanceSequence.append(instance)
        study.ReferencedSeriesSequence.append(series)
    ds.StudiesContainingOtherReferencedInstancesSequence = [study]
    ds.ContentDescription = description[:64]


def latest_read_segs(session: Session, item_id: int) -> list[AnnotationVersion]:
    """The latest SEG version of every read of an item: what an arbiter sees side by side."""
    latest = (select(AnnotationVersion.task_id, func.max(AnnotationVersion.version).label("version"))
              .join(Task, Task.id == AnnotationVersion.task_id)
              .where(Task.item_id == item_id, Task.purpose == TaskPurpose.READ.value,
                     AnnotationVersion.modality == AnnotationModality.SEG.value)
              .group_by(AnnotationVersion.task_id).subquery())
    return list(session.scalars(
        select(AnnotationVersion)
        .join(latest, (AnnotationVersion.task_id == latest.c.task_id) & (AnnotationVersion.version == latest.c.version))
        .where(AnnotationVersion.modality == AnnotationModality.SEG.value)
        .order_by(AnnotationVersion.id)))
