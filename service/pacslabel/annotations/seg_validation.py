"""Accept or reject a SEG against its source series (architecture invariant 3: no annotation is moved).

Every check raises :class:`AnnotationRejected` with a message that names the attribute, the value found and
the value expected, so that the STOW answer tells the reader (or the OHIF developer) exactly what is wrong.
The checks run cheapest first; the pixel data are decoded once, at the end, for the emptiness check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries, format_position
from pacslabel.annotations.protocol_mapping import ProtocolLabel, find_protocol_label
from pacslabel.annotations.seg_pixels import (
    LABEL_MAP_SEGMENTATION_STORAGE,
    SEG_SOP_CLASS_UIDS,
    SEGMENTATION_STORAGE,
    decode_frames,
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
    _check_references(seg, source)
    _check_frame_of_reference(seg, source)
    _check_matrix(seg, source)
    segment_labels = _segment_labels(seg)
    frames = _place_frames(seg, source, segmentation_type, segment_labels, tolerance_mm)
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


def _check_references(seg: Dataset, source: SourceSeries) -> None:
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
        for instance in item.get("ReferencedInstanceSequence") or []:
            _check_known_instance(
                str(instance.get("ReferencedSOPInstanceUID", "")), known, source, "ReferencedSeriesSequence"
            )
    for instance in seg.get("SourceImageSequence") or []:
        _check_known_instance(str(instance.get("ReferencedSOPInstanceUID", "")), known, source, "SourceImageSequence")
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        for uid in _derivation_sources(frame):
            _check_known_instance(uid, known, source, f"DerivationImageSequence of frame {number}")


def _check_known_instance(uid: str, known: set[str], source: SourceSeries, where: str) -> None:
    if uid not in known:
        raise AnnotationRejected(
            f"{where} references SOP instance {uid or '(empty)'}, which does not exist in the source series "
            f"{source.series_instance_uid}."
        )


def _derivation_sources(frame: Dataset) -> list[str]:
    uids = []
    for derivation in frame.get("DerivationImageSequence") or []:
        for source_image in derivation.get("SourceImageSequence") or []:
            uids.append(str(source_image.get("ReferencedSOPInstanceUID", "")))
    return uids


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


def functional_group(seg: Dataset, frame: Dataset, keyword: str) -> Dataset | None:
    """The first item of a functional group macro for one frame: per-frame first, then shared."""
    for group in (frame, seg.SharedFunctionalGroupsSequence[0] if seg.get("SharedFunctionalGroupsSequence") else None):
        if group is not None and group.get(keyword):
            return group[keyword][0]
    return None


def _check_orientation(seg: Dataset, frame: Dataset, number: int, source: SourceSeries) -> None:
    orientation_item = functional_group(seg, frame, "PlaneOrientationSequence")
    if orientation_item is None or "ImageOrientationPatient" not in orientation_item:
        raise AnnotationRejected(f"Frame {number} has no PlaneOrientationSequence (shared or per-frame).")
    found = np.asarray(orientation_item.ImageOrientationPatient, dtype=np.float64)
    difference = float(np.max(np.abs(found - np.asarray(source.orientation))))
    if found.shape != (6,) or difference > ORIENTATION_TOLERANCE:
        raise AnnotationRejected(
            f"ImageOrientationPatient of frame {number} ({list(found)}) differs from the source's "
            f"({list(source.orientation)}) by {difference:.4f}, beyond the tolerance {ORIENTATION_TOLERANCE}."
        )


def _check_pixel_measures(seg: Dataset, frame: Dataset, number: int, source: SourceSeries) -> None:
    measures = functional_group(seg, frame, "PixelMeasuresSequence")
    if measures is None or "PixelSpacing" not in measures:
        raise AnnotationRejected(
            f"Frame {number} has no PixelSpacing in a PixelMeasuresSequence (shared or per-frame); an OHIF SEG "
            "must be repaired with repair_ohif_segmentation first."
        )
    spacing = tuple(float(v) for v in measures.PixelSpacing)
    if len(spacing) != 2 or max(abs(a - b) for a, b in zip(spacing, source.pixel_spacing, strict=True)) > (
        PIXEL_SPACING_TOLERANCE_MM
    ):
        raise AnnotationRejected(
            f"PixelSpacing of frame {number} {list(spacing)} differs from the source's {list(source.pixel_spacing)}."
        )


def _segment_labels(seg: Dataset) -> dict[int, str]:
    labels: dict[int, str] = {}
    for item in seg.SegmentSequence:
        number = int(item.get("SegmentNumber", -1))
        if number in labels:
            raise AnnotationRejected(f"SegmentNumber {number} occurs twice in SegmentSequence.")
        labels[number] = str(item.get("SegmentLabel", ""))
    return labels


def _place_frames(
    seg: Dataset,
    source: SourceSeries,
    segmentation_type: str,
    segment_labels: dict[int, str],
    tolerance_mm: float,
) -> tuple[FramePlacement, ...]:
    frames = seg.PerFrameFunctionalGroupsSequence
    declared = int(seg.get("NumberOfFrames", 0) or 0)
    if declared != len(frames):
        raise AnnotationRejected(
            f"NumberOfFrames ({declared}) differs from the number of PerFrameFunctionalGroupsSequence items "
            f"({len(frames)})."
        )
    if not frames:
        raise AnnotationRejected("Empty segmentation: the SEG has no frames.")
    placements: list[FramePlacement] = []
    seen: dict[tuple[int, int | None], int] = {}
    for number, frame in enumerate(frames, start=1):
        _check_orientation(seg, frame, number, source)
        _check_pixel_measures(seg, frame, number, source)
        position_item = functional_group(seg, frame, "PlanePositionSequence")
        if position_item is None or "ImagePositionPatient" not in position_item:
            raise AnnotationRejected(f"Frame {number} has no ImagePositionPatient in its PlanePositionSequence.")
        position = [float(v) for v in position_item.ImagePositionPatient]
        index, distance = source.nearest_slice(position)
        if distance > tolerance_mm:
            raise AnnotationRejected(
                f"Shifted geometry: frame {number} is {distance:.2f} mm from the nearest source slice "
                f"(its ImagePositionPatient {format_position(position)}, the slice's "
                f"{format_position(source.positions[index])}; tolerance {tolerance_mm} mm)."
            )
        # A frame may sit exactly on a slice yet name another slice as its source (a whole-slice shift).
        for uid in _derivation_sources(frame):
            referenced = source.index_of_sop_instance(uid)
            if referenced is not None and referenced != index:
                raise AnnotationRejected(
                    f"Shifted geometry: frame {number} lies on source slice {index + 1} but its "
                    f"DerivationImageSequence names the image of slice {referenced + 1} ({uid})."
                )
        segment_number: int | None = None
        if segmentation_type != "LABELMAP":
            # highdicom puts it in the shared groups when the SEG has a single segment.
            identification = functional_group(seg, frame, "SegmentIdentificationSequence")
            if identification is None or "ReferencedSegmentNumber" not in identification:
                raise AnnotationRejected(f"Frame {number} has no SegmentIdentificationSequence.")
            segment_number = int(identification.ReferencedSegmentNumber)
            if segment_number not in segment_labels:
                raise AnnotationRejected(
                    f"Frame {number} references segment {segment_number}, which is not in SegmentSequence."
                )
        key = (index, segment_number)
        if key in seen:
            what = f"segment {segment_number}" if segment_number is not None else "the label map"
            raise AnnotationRejected(
                f"Frames {seen[key]} and {number} both hold {what} on source slice {index + 1}; one would overwrite "
                "the other."
            )
        seen[key] = number
        placements.append(FramePlacement(number, index, segment_number, distance))
    return tuple(placements)


def _check_not_empty(seg: Dataset) -> None:
    frames = decode_frames(seg)
    if frames.size == 0 or not np.any(frames):
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
