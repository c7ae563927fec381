"""Accept or reject a SEG against its source series (architecture invariant 3: no annotation is moved).

Every check raises :class:`AnnotationRejected` with a message that names the attribute, the value found and
the value expected, so that the STOW answer tells the reader (or the OHIF developer) exactly what is wrong.
The checks run cheapest first. The per-frame functional groups are read once, without a pydicom Dataset per
nested item (``functional_groups``), and checked as arrays; native pixel data are checked for their length
and scanned for a set bit as received, never unpacked (compressed ones are decoded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacslabel.annotations import functional_groups as groups
from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries, format_position
from pacslabel.annotations.protocol_mapping import ProtocolLabel, find_protocol_label
from pacslabel.annotations.seg_pixels import (
    LABEL_MAP_SEGMENTATION_STORAGE,
    SEG_SOP_CLASS_UIDS,
    SEGMENTATION_STORAGE,
    any_pixel_set,
    pixel_length_problem,
)

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE_MM = 0.01
# Direction cosines are unitless; 1e-3 is ~0.06 degrees, far below a visible rotation but above DS rounding.
ORIENTATION_TOLERANCE = 1e-3
PIXEL_SPACING_TOLERANCE_MM = 1e-4


@dataclass(frozen=True)
class FramePlacement:
    """Where one SEG frame lands in the source grid."""

    frame_number: int  # 1-based, as in DICOM
    slice_index: int  # 0-based index into SourceSeries (sorted along the normal)
    segment_number: int | None  # None for LABELMAP: the pixel values are the segment numbers
    distance_mm: float


@dataclass(frozen=True)
class ValidationReport:
    """What a valid SEG contains, for the audit log and for the reader that places its frames."""

    sop_instance_uid: str
    sop_class_uid: str
    segmentation_type: str
    segment_labels: dict[int, str]
    frames: tuple[FramePlacement, ...]
    protocol_labels: dict[int, str] = field(default_factory=dict)  # segment number -> protocol label name

    @property
    def covered_slices(self) -> tuple[int, ...]:
        return tuple(sorted({frame.slice_index for frame in self.frames}))

    @property
    def max_distance_mm(self) -> float:
        return max((frame.distance_mm for frame in self.frames), default=0.0)


def validate_segmentation(
    seg: Dataset,
    source: SourceSeries,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    protocol_labels: Sequence[ProtocolLabel | str] | None = None,
    check_pixels: bool = True,
) -> ValidationReport:
    """Check that ``seg`` is a segmentation of ``source`` that lies exactly on its slices.

    Parameters
    ----------
    seg
        The SEG as received (after :func:`~pacslabel.annotations.ohif_repairs.repair_ohif_segmentation`).
    source
        The referenced source series.
    tolerance_mm
        Largest allowed 3-D distance between a frame's ImagePositionPatient and a source slice position.
    protocol_labels
        When given, every segment must map to one of these labels (by name or by codes).
    check_pixels
        Decode the pixel data to reject an all-zero segmentation.

    Raises
    ------
    AnnotationRejected
        With a message naming the first failed check.
    """
    if not isinstance(seg, Dataset):
        raise TypeError("The segmentation must be a pydicom Dataset.")
    segmentation_type = _check_sop_class(seg)
    _check_identity(seg, source)
    facts = _read_frames(seg)
    _check_references(seg, source, facts)
    _check_frame_of_reference(seg, source)
    _check_matrix(seg, source)
    segment_labels = _segment_labels(seg)
    frames = _place_frames(seg, source, facts, segmentation_type, segment_labels, tolerance_mm)
    _check_pixel_length(seg)
    if check_pixels:
        _check_not_empty(seg)
    mapped: dict[int, str] = {}
    if protocol_labels is not None:
        mapped = _check_protocol_labels(seg, protocol_labels)
    return ValidationReport(
        sop_instance_uid=str(seg.SOPInstanceUID),
        sop_class_uid=str(seg.SOPClassUID),
        segmentation_type=segmentation_type,
        segment_labels=segment_labels,
        frames=frames,
        protocol_labels=mapped,
    )


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def _check_sop_class(seg: Dataset) -> str:
    sop_class = str(seg.get("SOPClassUID", ""))
    modality = seg.get("Modality")
    if sop_class not in SEG_SOP_CLASS_UIDS:
        disguise = " although its Modality is SEG" if modality == "SEG" else ""
        raise AnnotationRejected(
            f"Not a segmentation: a non-SEG disguised as SEG{disguise}. SOPClassUID {_sop_class_name(sop_class)} "
            f"is neither Segmentation Storage ({SEGMENTATION_STORAGE}) nor Label Map Segmentation Storage "
            f"({LABEL_MAP_SEGMENTATION_STORAGE})."
        )
    if modality != "SEG":
        raise AnnotationRejected(f"Modality of a segmentation must be SEG, not {modality!r}.")
    if not seg.get("SegmentSequence"):
        raise AnnotationRejected("Not a segmentation: a non-SEG disguised as SEG; SegmentSequence is missing or empty.")
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "Rows", "Columns"):
        if keyword not in seg:
            raise AnnotationRejected(f"Not a segmentation: a non-SEG disguised as SEG; {keyword} is missing.")
    segmentation_type = str(seg.get("SegmentationType", ""))
    if segmentation_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise AnnotationRejected(
            f"SegmentationType {segmentation_type!r} is not one of BINARY, FRACTIONAL or LABELMAP."
        )
    if (segmentation_type == "LABELMAP") != (sop_class == LABEL_MAP_SEGMENTATION_STORAGE):
        raise AnnotationRejected(
            f"SegmentationType {segmentation_type} does not fit SOPClassUID {_sop_class_name(sop_class)}: "
            "LABELMAP goes with Label Map Segmentation Storage only."
        )
    return segmentation_type


def _check_identity(seg: Dataset, source: SourceSeries) -> None:
    study = str(seg.get("StudyInstanceUID", ""))
    if study != source.study_instance_uid:
        raise AnnotationRejected(
            f"The SEG belongs to another study: StudyInstanceUID {study or '(missing)'} differs from the source "
            f"study {source.study_instance_uid}."
        )
    if str(seg.get("SeriesInstanceUID", "")) == source.series_instance_uid:
        raise AnnotationRejected(
            "The SEG's SeriesInstanceUID is the source series' own UID; a segmentation needs its own series."
        )
    if str(seg.get("SOPInstanceUID", "")) in source.sop_instance_uids:
        raise AnnotationRejected("The SEG's SOPInstanceUID is the UID of a source image.")


@dataclass(frozen=True)
class _FrameFacts:
    """What validation needs of every frame, read in one pass over PerFrameFunctionalGroupsSequence.

    A value is None when neither the frame nor the shared functional groups carry it. Reading the nested
    pydicom items is the costly part of validating a large SEG; the checks themselves run on arrays.
    """

    orientations: list[tuple[float, ...] | None]
    spacings: list[tuple[float, ...] | None]
    positions: list[tuple[float, ...] | None]
    segment_numbers: list[int | None]
    derivation_sources: list[list[str]]


# Tags of the functional group macros and the attributes validation reads from them (PS3.3 C.7.6.16.2).
_PLANE_ORIENTATION, _IMAGE_ORIENTATION = 0x00209116, 0x00200037
_PIXEL_MEASURES, _PIXEL_SPACING = 0x00289110, 0x00280030
_PLANE_POSITION, _IMAGE_POSITION = 0x00209113, 0x00200032
_SEGMENT_IDENTIFICATION, _REFERENCED_SEGMENT_NUMBER = 0x0062000A, 0x0062000B
_DERIVATION_IMAGE, _SOURCE_IMAGE, _REFERENCED_SOP_INSTANCE = 0x00089124, 0x00082112, 0x00081155


def _read_frames(seg: Dataset) -> _FrameFacts:
    shared = groups.first(seg, 0x52009229)  # SharedFunctionalGroupsSequence
    # (macro, attribute, reader) of each value; the shared value is read once, not once per frame.
    wanted = ((_PLANE_ORIENTATION, _IMAGE_ORIENTATION, groups.decimals),
              (_PIXEL_MEASURES, _PIXEL_SPACING, groups.decimals),
              (_PLANE_POSITION, _IMAGE_POSITION, groups.decimals),
              (_SEGMENT_IDENTIFICATION, _REFERENCED_SEGMENT_NUMBER, groups.unsigned_short))
    shared_values = [read(groups.first(shared, macro), attribute) for macro, attribute, read in wanted]

    def value(frame: groups.Item, index: int) -> Any:
        # A functional group in the frame's item wins over the shared one (PS3.3 C.7.6.16).
        macro, attribute, read = wanted[index]
        found = groups.items(frame, macro)
        return read(found[0], attribute) if found else shared_values[index]

    facts = _FrameFacts([], [], [], [], [])
    try:
        frames = groups.items(seg, 0x52009230)  # PerFrameFunctionalGroupsSequence
    except Exception as error:  # hostile or broken bytes: pydicom's reader raises several types
        raise AnnotationRejected(f"PerFrameFunctionalGroupsSequence cannot be read ({type(error).__name__}: "
                                 f"{str(error)[:200]}).") from error
    for number, frame in enumerate(frames, start=1):
        try:
            facts.orientations.append(value(frame, 0))
            facts.spacings.append(value(frame, 1))
            facts.positions.append(value(frame, 2))
            facts.segment_numbers.append(value(frame, 3))
            facts.derivation_sources.append([
                groups.uid(source_image, _REFERENCED_SOP_INSTANCE) or ""
                for derivation in groups.items(frame, _DERIVATION_IMAGE)
                for source_image in groups.items(derivation, _SOURCE_IMAGE)
            ])
        except AnnotationRejected as rejection:
            raise AnnotationRejected(f"Frame {number}: {rejection.reason}") from rejection
        except Exception as error:
            raise AnnotationRejected(f"The functional groups of frame {number} cannot be read "
                                     f"({type(error).__name__}: {str(error)[:200]}).") from error
    return facts


def _check_references(seg: Dataset, source: SourceSeries, facts: _FrameFacts) -> None:
    referenced_series = seg.get("ReferencedSeriesSequence") or []
    if not referenced_series:
        raise AnnotationRejected(
            "ReferencedSeriesSequence is missing or empty; the SEG does not say which series it segments "
            f"(expected the source series {source.series_instance_uid})."
        )
    series_uids = [str(item.get("SeriesInstanceUID", "")) for item in referenced_series]
    others = [uid for uid in series_uids if uid != source.series_instance_uid]
    if source.series_instance_uid not in series_uids or others:
        raise AnnotationRejected(
            f"ReferencedSeriesSequence does not reference the source series {source.series_instance_uid}: it "
            f"references other series {', '.join(others) or '(none)'}."
        )
    known = set(source.sop_instance_uids)
    for item in referenced_series:
        for instance in groups.items(item, 0x0008114A):  # ReferencedInstanceSequence
            uid = groups.uid(instance, _REFERENCED_SOP_INSTANCE) or ""
            if uid not in known:
                _check_known_instance(uid, known, source, "ReferencedSeriesSequence")
    for instance in groups.items(seg, _SOURCE_IMAGE):
        uid = groups.uid(instance, _REFERENCED_SOP_INSTANCE) or ""
        if uid not in known:
            _check_known_instance(uid, known, source, "SourceImageSequence")
    for number, uids in enumerate(facts.derivation_sources, start=1):
        for uid in uids:
            if uid not in known:
                _check_known_instance(uid, known, source, f"DerivationImageSequence of frame {number}")


def _check_known_instance(uid: str, known: set[str], source: SourceSeries, where: str) -> None:
    if uid not in known:
        raise AnnotationRejected(
            f"{where} references SOP instance {uid or '(empty)'}, which does not exist in the source series "
            f"{source.series_instance_uid}."
        )


def _check_frame_of_reference(seg: Dataset, source: SourceSeries) -> None:
    frame_of_reference = str(seg.get("FrameOfReferenceUID", ""))
    if frame_of_reference != source.frame_of_reference_uid:
        raise AnnotationRejected(
            f"Foreign Frame of Reference: FrameOfReferenceUID {frame_of_reference or '(missing)'} differs from the "
            f"source's {source.frame_of_reference_uid}."
        )


def _check_matrix(seg: Dataset, source: SourceSeries) -> None:
    rows, columns = int(seg.Rows), int(seg.Columns)
    if (rows, columns) != (source.rows, source.columns):
        raise AnnotationRejected(
            f"Rows x Columns of the SEG ({rows} x {columns}) differ from the source's "
            f"({source.rows} x {source.columns})."
        )


def _segment_labels(seg: Dataset) -> dict[int, str]:
    labels: dict[int, str] = {}
    for item in seg.SegmentSequence:
        number = int(item.get("SegmentNumber", -1))
        if number in labels:
            raise AnnotationRejected(f"SegmentNumber {number} occurs twice in SegmentSequence.")
        labels[number] = str(item.get("SegmentLabel", ""))
    return labels


def _nearest_slices(positions: np.ndarray, source: SourceSeries) -> tuple[np.ndarray, np.ndarray]:
    """For (frames, 3) positions: the nearest source slice of each and the 3-D distance to it (mm)."""
    indices = np.empty(len(positions), dtype=np.int64)
    distances = np.empty(len(positions), dtype=np.float64)
    chunk = max(1, 4_000_000 // max(1, source.number_of_slices))  # bounds the (chunk, slices, 3) temporary
    for begin in range(0, len(positions), chunk):
        block = positions[begin:begin + chunk]
        norms = np.linalg.norm(block[:, np.newaxis, :] - source.positions[np.newaxis, :, :], axis=2)
        nearest = np.argmin(norms, axis=1)
        indices[begin:begin + chunk] = nearest
        distances[begin:begin + chunk] = norms[np.arange(len(block)), nearest]
    return indices, distances


def _first_bad_vector(values: list[tuple[float, ...] | None], expected: Sequence[float],
                      tolerance: float) -> tuple[int, float] | None:
    """(0-based frame, largest difference) of the first frame whose vector is absent, of another length, or
    further than ``tolerance`` from ``expected`` in some component; None when every frame fits."""
    width = len(expected)
    array = np.full((len(values), width), np.nan)
    for index, value in enumerate(values):
        if value is not None and len(value) == width:
            array[index] = value
    differences = np.max(np.abs(array - np.asarray(expected, dtype=np.float64)), axis=1)
    bad = np.flatnonzero(~(differences <= tolerance))  # NaN (absent or wrong length) counts as bad
    if bad.size == 0:
        return None
    return int(bad[0]), float(differences[bad[0]])


def _place_frames(
    seg: Dataset,
    source: SourceSeries,
    facts: _FrameFacts,
    segmentation_type: str,
    segment_labels: dict[int, str],
    tolerance_mm: float,
) -> tuple[FramePlacement, ...]:
    declared = int(seg.get("NumberOfFrames", 0) or 0)
    count = len(facts.positions)
    if declared != count:
        raise AnnotationRejected(
            f"NumberOfFrames ({declared}) differs from the number of PerFrameFunctionalGroupsSequence items "
            f"({count})."
        )
    if not count:
        raise AnnotationRejected("Empty segmentation: the SEG has no frames.")
    # Each check finds its first failing frame on arrays; the answer names the earliest failing frame (and,
    # on one frame, the first check in this order), as a frame-by-frame loop would.
    problems: list[tuple[int, int, str]] = []  # (0-based frame, check order, message)

    bad = _first_bad_vector(facts.orientations, source.orientation, ORIENTATION_TOLERANCE)
    if bad is not None:
        index, difference = bad
        found = facts.orientations[index]
        if found is None:
            message = f"Frame {index + 1} has no PlaneOrientationSequence (shared or per-frame)."
        else:
            message = (f"ImageOrientationPatient of frame {index + 1} ({list(found)}) differs from the source's "
                       f"({list(source.orientation)}) by {difference:.4f}, beyond the tolerance "
                       f"{ORIENTATION_TOLERANCE}.")
        problems.append((index, 0, message))

    bad = _first_bad_vector(facts.spacings, source.pixel_spacing, PIXEL_SPACING_TOLERANCE_MM)
    if bad is not None:
        index, _ = bad
        spacing = facts.spacings[index]
        if spacing is None:
            message = (f"Frame {index + 1} has no PixelSpacing in a PixelMeasuresSequence (shared or per-frame); "
                       "an OHIF SEG must be repaired with repair_ohif_segmentation first.")
        else:
            message = (f"PixelSpacing of frame {index + 1} {list(spacing)} differs from the source's "
                       f"{list(source.pixel_spacing)}.")
        problems.append((index, 1, message))

    positions = np.full((count, 3), np.nan)
    missing_position = None
    for index, position in enumerate(facts.positions):
        if position is None or len(position) != 3:
            missing_position = index if missing_position is None else missing_position
        else:
            positions[index] = position
    if missing_position is not None:
        problems.append((missing_position, 2,
                         f"Frame {missing_position + 1} has no ImagePositionPatient in its PlanePositionSequence."))
    known = np.flatnonzero(~np.isnan(positions[:, 0]))
    slice_indices = np.full(count, -1, dtype=np.int64)
    distances = np.full(count, np.nan)
    slice_indices[known], distances[known] = _nearest_slices(positions[known], source)
    shifted = np.flatnonzero(distances > tolerance_mm)
    if shifted.size:
        index = int(shifted[0])
        nearest = int(slice_indices[index])
        problems.append((index, 2,
                         f"Shifted geometry: frame {index + 1} is {distances[index]:.2f} mm from the nearest source "
                         f"slice (its ImagePositionPatient {format_position(positions[index])}, the slice's "
                         f"{format_position(source.positions[nearest])}; tolerance {tolerance_mm} mm)."))

    # A frame may sit exactly on a slice yet name another slice as its source (a whole-slice shift).
    slice_of_uid = {uid: index for index, uid in enumerate(source.sop_instance_uids)}
    for index, uids in enumerate(facts.derivation_sources):
        for uid in uids:
            referenced = slice_of_uid.get(uid)
            if referenced is not None and slice_indices[index] >= 0 and referenced != slice_indices[index]:
                problems.append((index, 3,
                                 f"Shifted geometry: frame {index + 1} lies on source slice {slice_indices[index] + 1} "
                                 f"but its DerivationImageSequence names the image of slice {referenced + 1} ({uid})."))
                break
        else:
            continue
        break

    segment_numbers: list[int | None] = [None] * count
    if segmentation_type != "LABELMAP":
        # highdicom puts it in the shared groups when the SEG has a single segment.
        for index, number in enumerate(facts.segment_numbers):
            if number is None:
                problems.append((index, 4, f"Frame {index + 1} has no SegmentIdentificationSequence."))
                break
            if number not in segment_labels:
                problems.append((index, 4, f"Frame {index + 1} references segment {number}, which is not in "
                                           "SegmentSequence."))
                break
        segment_numbers = list(facts.segment_numbers)

    seen: dict[tuple[int, int | None], int] = {}
    for index in range(count):
        key = (int(slice_indices[index]), segment_numbers[index])
        if key[0] < 0:
            continue
        if key in seen:
            what = f"segment {key[1]}" if key[1] is not None else "the label map"
            problems.append((index, 5, f"Frames {seen[key]} and {index + 1} both hold {what} on source slice "
                                       f"{key[0] + 1}; one would overwrite the other."))
            break
        seen[key] = index + 1

    if problems:
        raise AnnotationRejected(min(problems)[2])
    return tuple(
        FramePlacement(index + 1, int(slice_indices[index]), segment_numbers[index], float(distances[index]))
        for index in range(count)
    )


def _check_pixel_length(seg: Dataset) -> None:
    problem = pixel_length_problem(seg)
    if problem is not None:
        raise AnnotationRejected(problem)


def _check_not_empty(seg: Dataset) -> None:
    if not any_pixel_set(seg):
        raise AnnotationRejected("Empty segmentation: every frame of the SEG is zero.")


def _check_protocol_labels(seg: Dataset, protocol_labels: Sequence[ProtocolLabel | str]) -> dict[int, str]:
    mapped: dict[int, str] = {}
    names = [label if isinstance(label, str) else label.name for label in protocol_labels]
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0 and seg.get("SegmentationType") == "LABELMAP":
            continue  # the LABELMAP background segment is not a finding
        label = find_protocol_label(item, protocol_labels)
        if label is None:
            raise AnnotationRejected(
                f"Unknown label: segment {number} {str(item.get('SegmentLabel', ''))!r} does not map to a label of "
                f"the protocol ({', '.join(names)}) by name or by category/type code."
            )
        mapped[number] = label if isinstance(label, str) else label.name
    return mapped
