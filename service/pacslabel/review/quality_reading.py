"""What the quality numbers need from stored annotation objects: label arrays of SEG versions (on protocol label
numbers), the protocol answers of SR versions and the segment labels a SEG holds, read from Orthanc once.

Annotation versions are immutable (architecture invariant 3: a save is a new SOP instance, never a change), so
whatever is derived from one version, or from a pair of versions, is true for good. The dashboard would
otherwise re-read every SEG on each request; :class:`VersionFacts` keeps the derived facts (small dicts, never
the arrays) in a bounded in-process cache keyed by version ids.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from pacslabel.annotations import repository as annotation_repository
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.annotations.protocol_mapping import code_key, normalise_label
from pacslabel.annotations.seg_building import segment_specs_from_seg
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.service import load_source, protocol_labels, question_codes
from pacslabel.annotations.sr_building import read_measurement_report
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.review.agreement import label_agreement
from pacslabel.tasks.models import Task

T = TypeVar("T")

CACHE_SIZE = 8192  # entries; each is a few small dicts (label -> Dice, question -> answer)


class FactCache:
    """A bounded, thread-safe LRU of derived facts. Two requests computing the same key at once both compute
    it (harmless: the result is the same); no lock is held while Orthanc is read."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]  # type: ignore[no-any-return]
            self.misses += 1
        value = compute()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


# One cache per process: the facts do not depend on who asks (access is decided before anything is read).
FACTS = FactCache()


# Big IN lists are split so that no backend hits its bound-parameter limit (SQLite: 32766), as the access
# policy does.
IN_CHUNK = 500


def chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """Sorted, distinct ids in slices of at most IN_CHUNK, for ``column.in_(...)`` queries."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), IN_CHUNK):
        yield wanted[start : start + IN_CHUNK]


def protocol_of_task(session: Session, task: Task) -> dict[str, Any]:
    return dict(annotation_repository.protocol_of(session, task) or {})


def label_names(protocol: Mapping[str, Any]) -> dict[int, str]:
    """Protocol label number (1 = first segment label of the protocol) -> label name."""
    return {number: label.name for number, label in enumerate(protocol_labels(protocol), start=1)}


def _source_series_uid(seg: Dataset, item: ProjectItem) -> str:
    for ref in seg.get("ReferencedSeriesSequence", []):
        if str(ref.SeriesInstanceUID) in item.series_uids:
            return str(ref.SeriesInstanceUID)
    return str(item.series_uids[0])


def read_protocol_labels(
    session: Session, orthanc: OrthancClient, version: AnnotationVersion, protocol: Mapping[str, Any]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A SEG version as a label array on protocol numbers, and its (slice, row, col) spacing in mm."""
    task = session.get(Task, version.task_id)
    assert task is not None  # annotation_versions.task_id is a foreign key
    item = annotation_repository.item_of(session, task)
    return read_seg_on_protocol(
        orthanc, item, version.study_instance_uid, version.series_instance_uid, version.sop_instance_uid, protocol
    )


def read_seg_on_protocol(
    orthanc: OrthancClient,
    item: ProjectItem,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    protocol: Mapping[str, Any],
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Any stored SEG of ``item`` as a label array on protocol numbers, and its spacing in mm.

    Readers may number their segments differently; the protocol label name is what two reads share, so
    segment numbers are mapped to the protocol's order (a segment that is no protocol label is left out).
    """
    seg = orthanc.retrieve_instance(study_instance_uid, series_instance_uid, sop_instance_uid)
    source = load_source(orthanc, item, study_instance_uid, _source_series_uid(seg, item))
    labels = read_label_array(seg, source)
    index = {normalise_label(name): number for number, name in label_names(protocol).items()}
    out = np.zeros(labels.shape, dtype=np.uint16)
    for spec in segment_specs_from_seg(seg):
        number = index.get(normalise_label(spec.label))
        if number is not None:
            out[labels == spec.number] = number
    spacing = (float(source.spacing), float(source.pixel_spacing[0]), float(source.pixel_spacing[1]))
    return out, spacing


def label_volumes_ml(
    orthanc: OrthancClient,
    item: ProjectItem,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    protocol: Mapping[str, Any],
) -> dict[str, float]:
    """Protocol label name -> volume in mL of the labels a stored SEG holds (labels with voxels only);
    cached by SOP Instance UID (a stored SEG never changes)."""

    def compute() -> dict[str, float]:
        labels, spacing = read_seg_on_protocol(
            orthanc, item, study_instance_uid, series_instance_uid, sop_instance_uid, protocol
        )
        voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
        counts = np.bincount(labels.ravel())
        names = label_names(protocol)
        return {names[n]: float(counts[n] * voxel_ml) for n in range(1, counts.size) if counts[n] and n in names}

    return dict(FACTS.get_or_compute(("label-volumes", sop_instance_uid), compute))


def dice_with_stored_seg(
    session: Session,
    orthanc: OrthancClient,
    version: AnnotationVersion,
    series_instance_uid: str,
    sop_instance_uid: str,
    protocol: Mapping[str, Any],
) -> dict[str, float]:
    """Per protocol label Dice of a SEG version with another stored SEG of the same item (e.g. the consensus),
    over the labels either holds; cached by (version id, other SOP Instance UID)."""

    def compute() -> dict[str, float]:
        task = session.get(Task, version.task_id)
        assert task is not None
        item = annotation_repository.item_of(session, task)
        mine, spacing = read_protocol_labels(session, orthanc, version, protocol)
        other, _ = read_seg_on_protocol(
            orthanc, item, version.study_instance_uid, series_instance_uid, sop_instance_uid, protocol
        )
        names = label_names(protocol)
        return {names.get(a.label, str(a.label)): float(a.dice) for a in label_agreement(mine, other, spacing)}

    return dict(FACTS.get_or_compute(("dice-with", version.id, sop_instance_uid), compute))


def _answer_table(
    protocol: Mapping[str, Any],
) -> dict[tuple[tuple[str, str] | None, tuple[str, str] | None], tuple[str, str]]:
    """(question code, answer code) as written by the SR builder -> (question id, answer text)."""
    table = {}
    for question in protocol.get("questions") or []:
        for answer in question.get("answers") or []:
            for question_code, answer_code in question_codes(protocol, {str(question["id"]): str(answer)}):
                table[(code_key(question_code), code_key(answer_code))] = (str(question["id"]), str(answer))
    return table


def report_answers(session: Session, orthanc: OrthancClient, version: AnnotationVersion) -> dict[str, str]:
    """The protocol answers of an SR version: {question id: answer}; cached by version id.

    Answers whose codes are not the protocol's (e.g. an SR written by another tool) are left out.
    """

    def compute() -> dict[str, str]:
        task = session.get(Task, version.task_id)
        assert task is not None
        table = _answer_table(protocol_of_task(session, task))
        sr = orthanc.retrieve_instance(
            version.study_instance_uid, version.series_instance_uid, version.sop_instance_uid
        )
        answers: dict[str, str] = {}
        for question_key, answer_code in read_measurement_report(sr).answers.items():
            hit = table.get((question_key, code_key(answer_code)))
            if hit is not None:
                answers[hit[0]] = hit[1]
        return answers

    return dict(FACTS.get_or_compute(("answers", version.id), compute))
