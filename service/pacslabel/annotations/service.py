"""Saving annotation versions (architecture invariant 3): every save is a new SOP instance, never a change.

One path for every door (STOW from OHIF, the JSON/upload API):

    find the reader's open task for the study -> load the source series (Orthanc metadata)
    -> SEG: repair OHIF gaps, validate geometry and labels | SR: check its study and evidence
    -> [lock the task] stamp version n+1 (author, time, predecessor) -> insert the row -> store in Orthanc
    -> fill orthanc_id -> audit -> commit -> invalidate the gateway's metadata cache

Nothing reaches Orthanc before every check passed. Two saves of one task are serialised (a row lock on
PostgreSQL, BEGIN IMMEDIATE on SQLite) and the unique (task, modality, version) constraint backs that up, so
concurrent saves become n+1 and n+2. The save commits its own transaction: once the instance is in Orthanc
its row must not be rolled back by whatever the caller does next (a later part of the same STOW failing).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileDataset
from pydicom.sr.coding import Code
from pydicom.uid import UID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacslabel.annotations import repository
from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationModality, AnnotationOrigin, AnnotationVersion, task_series_uid
from pacslabel.annotations.ohif_repairs import repair_ohif_segmentation
from pacslabel.annotations.part10_splice import ReceivedPart10, encode_part10
from pacslabel.annotations.protocol_mapping import ProtocolLabel, normalise_label
from pacslabel.annotations.references import latest_read_segs, reference_inputs
from pacslabel.annotations.seg_building import (
    SegType,
    build_segmentation,
    label_array_from_npy,
    segment_specs_from_mapping,
)
from pacslabel.annotations.seg_pixels import SEG_SOP_CLASS_UIDS
from pacslabel.annotations.seg_reading import read_segment_masks
from pacslabel.annotations.seg_validation import validate_segmentation
from pacslabel.annotations.sr_building import LengthMeasurement, build_measurement_report
from pacslabel.annotations.versioning import stamp_version
from pacslabel.audit.service import record
from pacslabel.errors import Conflict, Forbidden
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects.models import ProjectItem
from pacslabel.tasks.models import Task
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import User

logger = logging.getLogger(__name__)

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_SOP_CLASS_UIDS = frozenset({COMPREHENSIVE_SR, ENHANCED_SR, COMPREHENSIVE_3D_SR})

# OHIF's series number bases (ohif-integration notes §5.1): SR 3000, SEG 3100.
SERIES_NUMBERS = {AnnotationModality.SEG: 3100, AnnotationModality.SR: 3000}
SAVE_ATTEMPTS = 3
LOCAL_SCHEME = "99PACSLABEL"  # PS3.16 §8.2 private coding scheme for protocol questions and answers

# STOW FailureReason values (PS3.18 Table I.2-1 / PS3.4 C.4.2.1.4) carried by AnnotationRefused.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


class AnnotationRefused(AnnotationRejected):
    """A rejection that also says which STOW FailureReason it is."""

    def __init__(self, reason: str, status_code: int = 422, failure_reason: int = CANNOT_UNDERSTAND) -> None:
        super().__init__(reason, status_code)
        self.failure_reason = failure_reason


def failure_reason_of(error: Exception) -> int:
    """The STOW FailureReason for an error raised while saving (AnnotationRejected from the library too)."""
    if isinstance(error, AnnotationRefused):
        return error.failure_reason
    if isinstance(error, AnnotationRejected):
        return DATASET_DOES_NOT_MATCH if "disguised" in error.reason else CANNOT_UNDERSTAND
    if isinstance(error, Forbidden):
        return NOT_AUTHORIZED
    status = getattr(error, "status_code", 500)
    return OUT_OF_RESOURCES if status in (503, 504) else PROCESSING_FAILURE


def _class_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return f"{uid} ({name})" if name and name != uid else (uid or "(missing)")


# --- protocol ----------------------------------------------------------------------------------------------

def _code(item: Mapping[str, Any]) -> Code:
    return Code(str(item["CodeValue"]), str(item["CodingSchemeDesignator"]), str(item["CodeMeaning"]))


def _rgb(color: Mapping[str, Any] | None) -> tuple[int, int, int] | None:
    if not color:
        return None
    if "hex" in color:
        value = str(color["hex"]).lstrip("#")
        return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
    if "cielab" in color:
        rgb = hd.color.CIELabColor(*(float(v) for v in color["cielab"])).to_rgb(clip=True)
        return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    return None


def protocol_labels(protocol: Mapping[str, Any] | None) -> list[ProtocolLabel]:
    """The protocol's segment labels (projects.schema.SegmentLabel, stored as JSON) as ProtocolLabels."""
    return [
        ProtocolLabel(str(segment["label"]), _code(segment["category"]), _code(segment["type"]),
                      _rgb(segment.get("color")))
        for segment in (protocol or {}).get("segments") or []
    ]


def _short_code_value(*parts: str) -> str:
    # CodeValue is SH (16 characters): a stable digest when the natural value does not fit.
    joined = "/".join(parts)
    return joined if len(joined) <= 16 and "/" not in joined else hashlib.sha256(joined.encode()).hexdigest()[:16]


def question_codes(protocol: Mapping[str, Any] | None, answers: Mapping[str, str]) -> list[tuple[Code, Code]]:
    """Protocol answers ``{question id: answer text}`` as (question, answer) codes of the local scheme."""
    questions = {str(q["id"]): q for q in (protocol or {}).get("questions") or []}
    pairs = []
    for question_id, answer in answers.items():
        question = questions.get(question_id)
        if question is None:
            raise AnnotationRefused(
                f"Unknown question {question_id!r}: the protocol asks {sorted(questions) or 'no questions'}.")
        choices = [str(choice) for choice in question["answers"]]
        if answer not in choices:
            raise AnnotationRefused(f"Question {question_id!r} takes one of {choices}, not {answer!r}.")
        pairs.append((
            Code(_short_code_value(question_id), LOCAL_SCHEME, str(question["text"])[:64]),
            Code(_short_code_value(question_id, answer), LOCAL_SCHEME, answer[:64]),
        ))
    return pairs


# --- the task and its source -----------------------------------------------------------------------------

def author_role(task: Task) -> str:
    if task.purpose == TaskPurpose.REVIEW.value:
        return "reviewer"
    if task.purpose == TaskPurpose.ARBITRATION.value:
        return "arbiter"
    return "annotator"


def _savable(task: Task) -> bool:
    return task.status in repository.SAVABLE_STATUSES and not (
        task.purpose == TaskPurpose.REPEAT.value and task.status == TaskStatus.OPEN.value)


def _slot_reads(session: Session, item_id: int) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.item_id == item_id, Task.purpose == TaskPurpose.READ.value,
                                                   Task.slot.is_not(None)).order_by(Task.slot)))


def _sop_instance_uids(session: Session, task_id: int) -> set[str]:
    return set(session.scalars(select(AnnotationVersion.sop_instance_uid).where(AnnotationVersion.task_id == task_id)))


def _read_series_and_instances(dataset: Dataset) -> tuple[str, set[str]]:
    """The dataset's own series and the SOP instances it names as predecessor or reference (a reviewer's
    edit of a loaded read may carry either)."""
    named: set[str] = set()
    for keyword in ("PredecessorDocumentsSequence", "ReferencedSeriesSequence"):
        for outer in dataset.get(keyword) or []:
            for series in outer.get("ReferencedSeriesSequence") or [outer]:
                for ref in series.get("ReferencedSOPSequence") or series.get("ReferencedInstanceSequence") or []:
                    named.add(str(ref.get("ReferencedSOPInstanceUID", "")))
    return str(dataset.get("SeriesInstanceUID", "")), named


# OHIF 3.12.10 writes a re-saved SEG into a NEW series without PredecessorDocumentsSequence, although it
# records the loaded SEG as predecessor: `generateSegmentation` assigns the predecessor's series and
# PredecessorDocumentsSequence to the derivation object, not to its dataset (captured STOW body,
# tests/browser/test_review_in_ohif.py). A reviewer's edit of a loaded read therefore names no read. What it
# does carry is the read itself: the slices the reviewer did not touch come back bit for bit (SEG round trips
# are pixel-exact), while two readers' hand-drawn slices practically never agree pixel for pixel. Overlap
# (Dice) would not do: two readers who agree well differ from each other about as much as a reviewer's edit
# differs from its read, and a wrong guess would put a fix into another reader's read.


def _foreground(seg: Dataset, source: SourceSeries) -> np.ndarray:
    """Every voxel of any segment of ``seg`` on the source grid (segment numbers differ between OHIF's
    renumbered save and the stored read; what was drawn where does not)."""
    foreground = np.zeros(source.shape, dtype=bool)
    for mask in read_segment_masks(seg, source).values():
        foreground |= mask
    return foreground


def unchanged_slices(a: np.ndarray, b: np.ndarray) -> int:
    """Slices (axis 0) on which something is drawn in ``a`` or ``b`` and the two are identical."""
    drawn = (a | b).reshape(a.shape[0], -1).any(axis=1)
    same = (a == b).reshape(a.shape[0], -1).all(axis=1)
    return int(np.count_nonzero(drawn & same))


def read_by_unchanged_slices(session: Session, orthanc: OrthancClient, item: ProjectItem, dataset: Dataset,
                             reads: Sequence[Task]) -> tuple[Task | None, dict[int, int]]:
    """The read (of ``reads``) whose latest SEG the SEG ``dataset`` repeats unchanged on the most drawn
    slices, when exactly one read leads (at least one slice), and the count per read id. A read without a
    SEG, or drawn on another source series, counts 0. Raises AnnotationRejected when ``dataset`` itself
    cannot be read onto its source grid (the reason validation would give)."""
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    series_uid = _referenced_source_series(dataset, item)
    source = load_source(orthanc, item, study_uid, series_uid)
    edited = _foreground(repair_ohif_segmentation(dataset, source).dataset, source)
    counts: dict[int, int] = {}
    for read in reads:
        counts[read.id] = 0
        version = repository.latest_version(session, read.id, AnnotationModality.SEG.value)
        if version is None:
            continue
        seg = orthanc.retrieve_instance(version.study_instance_uid, version.series_instance_uid,
                                        version.sop_instance_uid)
        if _referenced_source_series(seg, item) == series_uid:
            counts[read.id] = unchanged_slices(edited, _foreground(seg, source))
    ranked = sorted(reads, key=lambda read: counts[read.id], reverse=True)
    if not ranked or counts[ranked[0].id] == 0 or (len(ranked) > 1 and counts[ranked[1].id] == counts[ranked[0].id]):
        return None, counts
    return ranked[0], counts


def fix_target(session: Session, task: Task, dataset: Dataset | None = None, fixes: int | None = None, *,
               orthanc: OrthancClient | None = None) -> Task:
    """The task a save on ``task`` becomes a version of: the task itself, except for a review task, whose
    save is the reviewer's fix of one read of the item (a new version *of the read*, so its reader sees it).

    The read is ``fixes`` (a read task id) when given; otherwise the read whose SEG series the dataset is in
    or whose version it names (PredecessorDocumentsSequence / references); otherwise the one read of the item
    that waits for review; with several waiting and ``orthanc`` given, the waiting read whose latest SEG the
    dataset (a SEG) repeats unchanged on the most slices (:func:`read_by_unchanged_slices`: what OHIF's
    re-save of a loaded read leaves to go by); with no read waiting, the review task itself (the reviewer's
    own annotation). Only a submitted read (under review) can be fixed; several waiting reads and no way to
    tell is a 422.
    """
    if task.purpose != TaskPurpose.REVIEW.value:
        if fixes is not None and fixes != task.id:
            raise AnnotationRefused(f"Only a review task fixes another task's read; task {task.id} is a "
                                    f"{task.purpose} task.", 422, NOT_AUTHORIZED)
        return task
    reads = _slot_reads(session, task.item_id)
    waiting = [read for read in reads if read.status == TaskStatus.SUBMITTED.value]
    if fixes is not None:
        target = next((read for read in reads if read.id == fixes), None)
        if target is None:
            raise AnnotationRefused(f"Task {fixes} is not a read of the item under review (its reads: "
                                    f"{', '.join(str(r.id) for r in reads) or 'none'}).", 422, DATASET_DOES_NOT_MATCH)
    else:
        target = None
        if dataset is not None:
            own_series, named = _read_series_and_instances(dataset)
            study_uid = str(dataset.get("StudyInstanceUID", ""))
            if own_series in {task_series_uid(study_uid, task.id, kind) for kind in AnnotationModality}:
                return task  # a new version of the reviewer's own annotation on the review task
            for read in reads:
                series = {task_series_uid(study_uid, read.id, kind) for kind in AnnotationModality}
                if own_series in series or named & _sop_instance_uids(session, read.id):
                    target = read
                    break
        if target is None and len(waiting) == 1:
            target = waiting[0]
        if target is None and not waiting:
            return task  # nothing under review: the reviewer's own annotation, kept on the review task
        overlap = ""
        if (target is None and orthanc is not None and dataset is not None
                and str(dataset.get("SOPClassUID", "")) in SEG_SOP_CLASS_UIDS):
            target, counts = read_by_unchanged_slices(session, orthanc, repository.item_of(session, task), dataset,
                                                      waiting)
            overlap = (" Nor does the SEG repeat one read's latest SEG on more slices than the others (drawn "
                       "slices identical to task " + ", task ".join(f"{read_id}: {n}" for read_id, n in counts.items())
                       + ").")
        if target is None:
            raise AnnotationRefused(
                f"This review covers {len(waiting)} reads waiting for review (tasks "
                f"{', '.join(str(r.id) for r in waiting) or 'none'}): say which read the fix is for "
                f"(fixes=<read task id>, or save over the read's own SEG).{overlap}", 422, DATASET_DOES_NOT_MATCH)
    if target.status != TaskStatus.SUBMITTED.value:
        raise AnnotationRefused(f"Read task {target.id} is {target.status}; a reviewer fixes a read while it is "
                                "submitted for review.", 409, NOT_AUTHORIZED)
    return target


def find_task(session: Session, user: User, study_instance_uid: str, task: Task | None = None) -> Task:
    """The user's task that takes an annotation of this study (given, or found by the study)."""
    if task is None:
        tasks = repository.savable_tasks_for_study(session, user.id, study_instance_uid)
        if not tasks:
            raise AnnotationRefused("no open task of yours for this study", 403, NOT_AUTHORIZED)
        return tasks[0]
    if task.reader_id != user.id:
        raise AnnotationRefused("this task belongs to another reader", 403, NOT_AUTHORIZED)
    if not _savable(task):
        raise AnnotationRefused(f"task {task.id} is {task.status}; it no longer takes annotations", 409,
                                NOT_AUTHORIZED)
    item = repository.item_of(session, task)
    task_study = repository.study_uid_of(session, item)
    if task_study != study_instance_uid:
        raise AnnotationRefused(
            f"The annotation belongs to another study: StudyInstanceUID {study_instance_uid or '(missing)'} is not "
            f"the study of task {task.id} ({task_study}).", 422, DATASET_DOES_NOT_MATCH)
    return task


# Source geometry per (study, series), kept for SOURCE_CACHE_S: fetching and parsing the metadata of a
# 300-slice series costs ~1.3 s, more than the rest of a save. A cached grid can only be stale by missing
# slices that arrived later; a SEG drawn on those fails validation, and that failure is retried once on a
# freshly fetched grid (see prepare_annotation), so the cache never decides a rejection on its own.
SOURCE_CACHE_S = 600.0
SOURCE_CACHE_SIZE = 64
_source_cache: dict[tuple[str, str], tuple[float, SourceSeries]] = {}
_source_cache_lock = threading.Lock()


def load_source(orthanc: OrthancClient, item: ProjectItem, study_uid: str, series_uid: str, *,
                fresh: bool = False) -> SourceSeries:
    """The geometry of one of the item's source series, from Orthanc's series metadata (DICOM JSON)."""
    if series_uid not in item.series_uids:
        raise AnnotationRefused(
            f"The annotation references series {series_uid}, which is not a source series of this task "
            f"(its series: {', '.join(item.series_uids)}).", 422, DATASET_DOES_NOT_MATCH)
    key = (study_uid, series_uid)
    now = time.monotonic()
    with _source_cache_lock:
        cached = _source_cache.get(key)
    if cached is not None and not fresh and now - cached[0] < SOURCE_CACHE_S:
        return cached[1]
    metadata = orthanc.retrieve_series_metadata(study_uid, series_uid)
    try:
        source = SourceSeries.from_instances(metadata)
    except ValueError as error:
        raise AnnotationRefused(f"The source series {series_uid} has no usable geometry: {error}", 422,
                                PROCESSING_FAILURE) from error
    with _source_cache_lock:
        if len(_source_cache) >= SOURCE_CACHE_SIZE:
            _source_cache.pop(min(_source_cache, key=lambda k: _source_cache[k][0]))
        _source_cache[key] = (now, source)
    return source


def forget_source(study_uid: str, series_uid: str) -> None:
    with _source_cache_lock:
        _source_cache.pop((study_uid, series_uid), None)


def _referenced_source_series(seg: Dataset, item: ProjectItem) -> str:
    references = {str(series.SeriesInstanceUID) for series in seg.get("ReferencedSeriesSequence") or []
                  if "SeriesInstanceUID" in series}
    if len(references) > 1:
        raise AnnotationRefused(f"The SEG references {len(references)} series ({', '.join(sorted(references))}); "
                                "a segmentation is drawn on one source series.", 422, DATASET_DOES_NOT_MATCH)
    if references:
        return references.pop()
    # OHIF sometimes leaves ReferencedSeriesSequence out (repaired later from the frames' sources); with one
    # source series there is no doubt which one it was drawn on.
    if len(item.series_uids) == 1:
        return str(item.series_uids[0])
    raise AnnotationRefused("The SEG has no ReferencedSeriesSequence, and this task has several source series: "
                            "say which series it segments.", 422, DATASET_DOES_NOT_MATCH)


def _sr_references(sr: Dataset) -> tuple[set[str], set[str]]:
    """(study UIDs, series UIDs) the SR's evidence sequences name."""
    studies: set[str] = set()
    series: set[str] = set()
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in sr.get(keyword) or []:
            studies.add(str(study.get("StudyInstanceUID", "")))
            for item in study.get("ReferencedSeriesSequence") or []:
                series.add(str(item.get("SeriesInstanceUID", "")))
    return studies, series


def _check_sr(sr: Dataset, item: ProjectItem, study_uid: str, own_series: Iterable[str]) -> None:
    studies, series = _sr_references(sr)
    foreign_studies = studies - {study_uid}
    if foreign_studies:
        raise AnnotationRefused(f"The SR's evidence names another study ({', '.join(sorted(foreign_studies))}); "
                                f"it may reference this task's study {study_uid} only.", 422, DATASET_DOES_NOT_MATCH)
    allowed = set(item.series_uids) | set(own_series)
    foreign_series = series - allowed
    if foreign_series:
        raise AnnotationRefused(f"The SR references series {', '.join(sorted(foreign_series))}, which are not "
                                "source series of this task.", 422, DATASET_DOES_NOT_MATCH)
    if not series & set(item.series_uids):
        raise AnnotationRefused("The SR references no image of this task's source series "
                                "(CurrentRequestedProcedureEvidenceSequence is missing or empty).", 422,
                                DATASET_DOES_NOT_MATCH)
    if not sr.get("ContentSequence"):
        raise AnnotationRefused("The SR has no content (ContentSequence is missing or empty).", 422,
                                CANNOT_UNDERSTAND)


def modality_of(ds: Dataset) -> AnnotationModality:
    """SEG or SR by SOP class; a Modality that lies about the class is refused precisely."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in SEG_SOP_CLASS_UIDS:
        return AnnotationModality.SEG
    if ds.get("Modality") == "SEG":
        raise AnnotationRefused(
            f"Not a segmentation: a non-SEG disguised as SEG although its Modality is SEG. SOPClassUID "
            f"{_class_name(sop_class)} is not a Segmentation Storage class.", 422, DATASET_DOES_NOT_MATCH)
    if sop_class in SR_SOP_CLASS_UIDS:
        return AnnotationModality.SR
    raise AnnotationRefused(
        f"Only SEG and SR objects can be stored here, not SOPClassUID {_class_name(sop_class)} "
        f"(Modality {ds.get('Modality') or '(missing)'}).", 422, SOP_CLASS_NOT_SUPPORTED)


# --- saving ------------------------------------------------------------------------------------------------

def _begin_write(session: Session, task_id: int) -> None:
    """Take the task's save lock. SQLite: the request's read transaction is committed and a BEGIN IMMEDIATE
    transaction holds the write lock (a deferred one could not upgrade after another writer committed)."""
    if session.get_bind().dialect.name == "sqlite":
        if session.in_transaction():
            session.commit()
        session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
    repository.lock_task(session, task_id)


# Elements stamp_version never touches but would deep-copy (300 per-frame items cost ~0.3 s): they are
# set aside while stamping and put back on the stamped copy. The dataset is the save's own copy.
_UNSTAMPED = ("PerFrameFunctionalGroupsSequence", "PixelData", "ReferencedSeriesSequence", "SourceImageSequence")


_UNSTAMPED_TAGS = frozenset(tag_for_keyword(keyword) for keyword in _UNSTAMPED)


def _stamp(dataset: Dataset, **kwargs: Any) -> Dataset:
    light = Dataset()
    heavy = []
    # get_item, not iteration: iterating a Dataset converts raw elements (300 per-frame items into Datasets).
    for tag in dataset.keys():
        element = dataset.get_item(tag)
        if tag in _UNSTAMPED_TAGS:
            heavy.append(element)
        else:
            light.add(element)
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None:
        light.file_meta = file_meta
    stamped = stamp_version(light, **kwargs)
    for element in heavy:
        stamped.add(element)
    return stamped


def _part10(ds: Dataset, received: ReceivedPart10 | None = None) -> bytes:
    # With the bytes the instance arrived in (STOW), only the changed header elements are encoded again;
    # the per-frame groups and pixel data are copied (annotations.part10_splice).
    return encode_part10(ds, received)


def _invalidate_metadata_cache(study_uid: str, series_uid: str) -> None:
    """Tell the gateway's read side that the series changed (its module may not exist yet)."""
    try:
        from pacslabel.dicomweb import metadata_cache  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    invalidate = getattr(metadata_cache, "invalidate_series", None)
    if callable(invalidate):
        try:
            invalidate(study_uid, series_uid)
        except Exception:  # a stale cache must not turn a stored version into an error answer
            logger.exception("metadata cache invalidation failed for series %s", series_uid)


@dataclass(frozen=True)
class _Prepared:
    task: Task  # the task the user acts on
    target: Task  # the task the version belongs to (the read, for a reviewer's fix; else the same task)
    study_uid: str
    modality: AnnotationModality
    dataset: Dataset
    repairs: list[str]


def _plain(dataset: Dataset) -> Dataset:
    """A plain pydicom Dataset with the same elements (shallow). highdicom objects keep an SQLite index that
    is bound to the thread that built them and is dumped on every deepcopy (slow, and fails in a threadpool)."""
    if type(dataset) in (Dataset, FileDataset):
        return dataset
    plain = Dataset(dataset)
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None:
        plain.file_meta = file_meta
    return plain


def prepare_annotation(
    session: Session,
    orthanc: OrthancClient,
    user: User,
    dataset: Dataset,
    *,
    task: Task | None = None,
    source: SourceSeries | None = None,
    fixes: int | None = None,
) -> _Prepared:
    """Every check of a save, without storing anything. Raises AnnotationRejected / Forbidden / Conflict."""
    dataset = _plain(dataset)
    modality = modality_of(dataset)
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    task = find_task(session, user, study_uid, task)
    target = fix_target(session, task, dataset, fixes, orthanc=orthanc)
    item = repository.item_of(session, task)
    repairs: list[str] = []
    if modality == AnnotationModality.SEG:
        series_uid = _referenced_source_series(dataset, item)
        given = source is not None and source.series_instance_uid == series_uid
        if not given:
            source = load_source(orthanc, item, study_uid, series_uid)
        assert source is not None
        labels = protocol_labels(repository.protocol_of(session, target))
        try:
            repaired = repair_ohif_segmentation(dataset, source, protocol_labels=labels or None)
            validate_segmentation(repaired.dataset, source, protocol_labels=labels or None)
        except AnnotationRejected:
            if given:
                raise
            # Maybe the cached grid misses slices that arrived since: decide on a fresh one.
            source = load_source(orthanc, item, study_uid, series_uid, fresh=True)
            repaired = repair_ohif_segmentation(dataset, source, protocol_labels=labels or None)
            validate_segmentation(repaired.dataset, source, protocol_labels=labels or None)
        dataset, repairs = repaired.dataset, repaired.repairs
    else:
        own = [task_series_uid(study_uid, target.id, kind) for kind in AnnotationModality]
        _check_sr(dataset, item, study_uid, own)
    return _Prepared(task, target, study_uid, modality, dataset, repairs)


_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="annotation-sha256")
_DIGEST_PENDING = "0" * 64  # replaced before commit (see save_annotation)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_annotation(
    session: Session,
    orthanc_client: OrthancClient,
    user: User,
    dataset: Dataset,
    *,
    task: Task | None = None,
    origin: AnnotationOrigin | str,
    source: SourceSeries | None = None,
    fixes: int | None = None,
    received: ReceivedPart10 | None = None,
) -> AnnotationVersion:
    """Validate ``dataset`` (a SEG or SR) and store it as the next version of the user's task; commits.

    ``task``: the task to save on (API path); None finds the user's open task for the dataset's study (STOW).
    ``source``: the source series when the caller has it already (API path, saves a metadata round trip).
    ``fixes``: on a review task, the read task the reviewer fixes (see :func:`fix_target`); the version is
    the read's next version, authored by the reviewer, in the read's own series.
    ``received``: the Part-10 bytes ``dataset`` was read from (STOW), reused when encoding the version.
    """
    origin = AnnotationOrigin(origin)
    prepared = prepare_annotation(session, orthanc_client, user, dataset, task=task, source=source, fixes=fixes)
    acting = prepared.task
    task = prepared.target
    modality = prepared.modality
    series_uid = task_series_uid(prepared.study_uid, task.id, modality)
    role = author_role(acting)
    _begin_write(session, task.id)
    session.refresh(task)
    if acting is not task:
        session.refresh(acting)
        if not _savable(acting) or task.status != TaskStatus.SUBMITTED.value:  # decided while being checked
            raise Conflict(f"read task {task.id} is {task.status} and review task {acting.id} is {acting.status}; "
                           "the fix is too late")
    elif not _savable(task):  # submitted (or skipped) while this save was being checked
        raise Conflict(f"task {task.id} is {task.status}; it no longer takes annotations")
    for attempt in range(1, SAVE_ATTEMPTS + 1):
        previous = repository.latest_version(session, task.id, modality.value)
        number = previous.version + 1 if previous else 1
        stamped = _stamp(
            prepared.dataset,
            author=user.username,
            author_role=role,
            task_series_uid=series_uid,
            series_number=SERIES_NUMBERS[modality],
            instance_number=number,
            predecessor_sop_instance_uid=previous.sop_instance_uid if previous else None,
            predecessor_sop_class_uid=previous.sop_class_uid if previous else None,
        )
        if acting.purpose == TaskPurpose.ARBITRATION.value and modality == AnnotationModality.SEG:
            # The arbitrated SEG names the reads the arbiter settled, like a consensus SEG does.
            reads = latest_read_segs(session, acting.item_id)
            if reads:
                reference_inputs(stamped, prepared.study_uid, reads, f"arbitration of {len(reads)} reads")
        data = _part10(stamped, received)
        # Hashing 10 MB takes ~7 ms; it runs (GIL released) while the row is written and Orthanc stores the
        # file, and the digest is set before the transaction commits, so no reader ever sees the placeholder.
        digest = _HASHING.submit(_sha256_hex, data)
        row = AnnotationVersion(
            task_id=task.id,
            study_instance_uid=prepared.study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=str(stamped.SOPInstanceUID),
            sop_class_uid=str(stamped.SOPClassUID),
            modality=modality.value,
            version=number,
            author_id=user.id,
            author_role=role,
            predecessor_id=previous.id if previous else None,
            origin=origin.value,
            sha256=_DIGEST_PENDING,
            byte_size=len(data),
            repairs=list(prepared.repairs),
        )
        try:
            # The row first: if another save took number n+1 (the lock makes this a backstop only), nothing
            # has reached Orthanc yet and the next attempt stamps n+2.
            with session.begin_nested():
                repository.add_version(session, row)
        except IntegrityError:
            logger.info("task %s: version %s was taken (attempt %s); retrying", task.id, number, attempt)
            continue
        break
    else:
        raise Conflict(f"task {task.id}: could not allocate a version number after {SAVE_ATTEMPTS} attempts")
    stored = orthanc_client.store_instance(data)
    row.orthanc_id = stored.orthanc_id
    row.sha256 = digest.result()
    record(session, user.username, "annotation_save", "task", task.id, version=number, modality=modality.value,
           sop_instance_uid=row.sop_instance_uid, origin=origin.value, repairs=len(prepared.repairs),
           **({"fix_by_review_task": acting.id, "predecessor_id": row.predecessor_id} if acting is not task else {}))
    session.flush()
    session.commit()
    logger.info("task %s: stored %s version %s (%s, %d bytes)", task.id, modality.value, number,
                row.sop_instance_uid, row.byte_size)
    _invalidate_metadata_cache(prepared.study_uid, series_uid)
    return row


# --- building (the API door, without OHIF) ---------------------------------------------------------------

def task_source(session: Session, orthanc: OrthancClient, task: Task,
                 series_uid: str | None) -> tuple[ProjectItem, str, SourceSeries]:
    """The task's item, study and source series (the named one, or the item's only one)."""
    item = repository.item_of(session, task)
    study_uid = repository.study_uid_of(session, item)
    if series_uid is None:
        if len(item.series_uids) != 1:
            raise AnnotationRefused(f"This task has {len(item.series_uids)} source series; name one with "
                                    f"series_uid ({', '.join(item.series_uids)}).")
        series_uid = str(item.series_uids[0])
    return item, study_uid, load_source(orthanc, item, study_uid, series_uid)


def save_label_array(
    session: Session,
    orthanc_client: OrthancClient,
    user: User,
    task: Task,
    npy: bytes,
    segments: Mapping[str | int, str],
    *,
    seg_type: SegType = "BINARY",
    series_uid: str | None = None,
    fixes: int | None = None,
) -> AnnotationVersion:
    """Build a SEG from a ``.npy`` label array (slices sorted along the normal) and save it as a version
    (on a review task: the reviewer's fix of read ``fixes``, see :func:`fix_target`)."""
    find_task(session, user, repository.study_uid_of(session, repository.item_of(session, task)), task)
    target = fix_target(session, task, None, fixes)
    labels = protocol_labels(repository.protocol_of(session, target))
    if not labels:
        raise AnnotationRefused("The task's protocol has no segment labels to build a segmentation with.")
    if not segments:
        raise AnnotationRefused('segments must map segment numbers to protocol labels, e.g. {"1": "lesion"}.')
    specs = segment_specs_from_mapping(segments, labels)
    _, study_uid, source = task_source(session, orthanc_client, task, series_uid)
    array = label_array_from_npy(npy, source, [spec.number for spec in specs])
    seg = build_segmentation(
        array, source, specs,
        series_instance_uid=task_series_uid(study_uid, target.id, AnnotationModality.SEG),
        series_number=SERIES_NUMBERS[AnnotationModality.SEG],
        instance_number=1,  # stamped with the real version number by save_annotation
        author=user.username,
        seg_type=seg_type,
        series_description="pacslabel segmentation",
    )
    return save_annotation(session, orthanc_client, user, seg, task=task, origin=AnnotationOrigin.API, source=source,
                           fixes=target.id if target is not task else None)


def save_measurement_report(
    session: Session,
    orthanc_client: OrthancClient,
    user: User,
    task: Task,
    measurements: Sequence[Mapping[str, Any]],
    answers: Mapping[str, str],
    *,
    series_uid: str | None = None,
) -> AnnotationVersion:
    """Build a TID 1500 SR from lengths and the protocol's answers and save it as an SR version."""
    find_task(session, user, repository.study_uid_of(session, repository.item_of(session, task)), task)
    protocol = repository.protocol_of(session, task)
    labels = {normalise_label(label.name): label for label in protocol_labels(protocol)}
    pairs = question_codes(protocol, answers)
    _, study_uid, source = task_source(session, orthanc_client, task, series_uid)
    lengths = []
    for index, measurement in enumerate(measurements, start=1):
        finding = measurement.get("finding")
        label = labels.get(normalise_label(finding)) if finding else None
        if finding and label is None:
            raise AnnotationRefused(f"Measurement {index}: finding {finding!r} is not a protocol label.")
        lengths.append(LengthMeasurement(
            value_mm=float(measurement["value_mm"]),
            sop_instance_uid=str(measurement["sop_instance_uid"]),
            points=tuple((float(p[0]), float(p[1])) for p in measurement["points"]),
            tracking_id=str(measurement.get("tracking_id") or f"measurement {index}"),
            finding_type=label.type if label else None,
        ))
    try:
        sr = build_measurement_report(
            source, lengths, pairs,
            author=user.username,
            series_instance_uid=task_series_uid(study_uid, task.id, AnnotationModality.SR),
            series_number=SERIES_NUMBERS[AnnotationModality.SR],
            instance_number=1,
            series_description="pacslabel measurements",
        )
    except ValueError as error:
        if isinstance(error, AnnotationRejected):
            raise
        raise AnnotationRefused(str(error)) from error
    return save_annotation(session, orthanc_client, user, sr, task=task, origin=AnnotationOrigin.API, source=source)


def list_versions(session: Session, task: Task) -> list[dict[str, Any]]:
    """The task's versions, oldest first per modality (for its own reader or an admin)."""
    by_id = {}
    rows = repository.versions_of_task(session, task.id)
    for row in rows:
        by_id[row.id] = row
    return [
        {
            "id": row.id,
            "modality": row.modality,
            "version": row.version,
            "study_instance_uid": row.study_instance_uid,
            "series_instance_uid": row.series_instance_uid,
            "sop_instance_uid": row.sop_instance_uid,
            "sop_class_uid": row.sop_class_uid,
            "author_role": row.author_role,
            "created_at": row.created_at.isoformat(),
            "origin": row.origin,
            "predecessor_sop_instance_uid": by_id[row.predecessor_id].sop_instance_uid
            if row.predecessor_id in by_id else None,
            "sha256": row.sha256,
            "byte_size": row.byte_size,
            "repairs": list(row.repairs or []),
        }
        for row in rows
    ]
