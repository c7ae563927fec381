"""Build a SEG from a label array on the source grid, with highdicom.

The label array is passed to highdicom as a 3-D integer array (label-map style), never one-hot: for many
segments the one-hot path is ~20x slower and needs GBs (performance notes §6). LABELMAP output is compressed
with lossless JPEG-LS when pyjpegls is installed, because an uncompressed LABELMAP is larger than a bit-packed
BINARY SEG (performance notes §6).
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

import pacslabel
from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceItem, SourceSeries
from pacslabel.annotations.protocol_mapping import ProtocolLabel, code_from_item, normalise_label

logger = logging.getLogger(__name__)

SegType = Literal["BINARY", "LABELMAP"]
MANUFACTURER = "pacslabel"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment (one lesion or structure) of a SEG.

    ``tracking_uid`` identifies the finding across slices and across versions: pass the predecessor's value
    (see :func:`segment_specs_from_seg`) so that a lesion keeps its identity when it is edited.
    """

    number: int
    label: str
    category_code: Code
    type_code: Code
    color: tuple[int, int, int] | None = None
    tracking_uid: str | None = None
    tracking_id: str | None = None


def _encoder_available(transfer_syntax_uid: str) -> bool:
    if transfer_syntax_uid == JPEGLSLossless:
        return importlib.util.find_spec("jpeg_ls") is not None
    return True


def default_transfer_syntax(seg_type: SegType) -> str:
    """JPEG-LS lossless for LABELMAP when it can be encoded, Explicit VR Little Endian otherwise.

    BINARY stays uncompressed: it is bit-packed already and highdicom allows only encapsulated syntaxes
    that OHIF's loader does not all decode.
    """
    if seg_type == "LABELMAP" and _encoder_available(JPEGLSLossless):
        return JPEGLSLossless
    return ExplicitVRLittleEndian


def _source_series(source: SourceSeries | Sequence[SourceItem]) -> SourceSeries:
    return source if isinstance(source, SourceSeries) else SourceSeries.from_instances(source)


def check_label_array(label_array: np.ndarray, source: SourceSeries, segment_numbers: Sequence[int]) -> np.ndarray:
    """Validate a label array against the source grid and the segment numbers; return it as uint8/uint16.

    Raises
    ------
    AnnotationRejected
        On a wrong shape, a non-integer dtype, negative values or values that are not segment numbers.
    """
    if not isinstance(label_array, np.ndarray):
        raise AnnotationRejected(f"The label array must be a numpy array, not {type(label_array).__name__}.")
    if label_array.ndim != 3 or label_array.shape != source.shape:
        raise AnnotationRejected(
            f"The label array has shape {tuple(label_array.shape)} but the source series needs "
            f"{source.shape} (slices, rows, columns)."
        )
    if label_array.dtype == np.bool_:
        label_array = label_array.astype(np.uint8)
    if not np.issubdtype(label_array.dtype, np.integer):
        raise AnnotationRejected(f"The label array must have an integer dtype, not {label_array.dtype}.")
    values = np.unique(label_array)
    if values.size and values[0] < 0:
        raise AnnotationRejected(f"The label array holds negative values ({int(values[0])}).")
    unknown = sorted(set(values.tolist()) - {0, *segment_numbers})
    if unknown:
        raise AnnotationRejected(
            f"The label array holds values {unknown[:10]} that are not known segment numbers {sorted(segment_numbers)}."
        )
    dtype = np.uint8 if max(segment_numbers, default=0) <= 255 else np.uint16
    return label_array.astype(dtype, copy=False)


def label_array_from_npy(
    data: bytes,
    source: SourceSeries | Sequence[SourceItem],
    segment_numbers: Sequence[int],
) -> np.ndarray:
    """Load a ``.npy`` label array (bytes) and validate it against the source grid and segment numbers.

    Pickled object arrays are refused (``allow_pickle=False``): an upload must not run code.
    """
    series = _source_series(source)
    # Without the magic np.load would try to unpickle the bytes; say plainly what the upload is not.
    if not bytes(data[:6]) == b"\x93NUMPY":
        raise AnnotationRejected("The upload is not a NumPy .npy file (it does not start with the .npy magic).")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise AnnotationRejected(f"The upload is not a plain NumPy .npy array: {str(error).rstrip('.')}.") from error
    except (OSError, EOFError) as error:
        raise AnnotationRejected(f"The upload is not a readable NumPy .npy file: {error}.") from error
    return check_label_array(array, series, segment_numbers)


def segment_specs_from_mapping(
    mapping: Mapping[str | int, str],
    protocol_labels: Sequence[ProtocolLabel],
) -> list[SegmentSpec]:
    """Turn a segment map (``{"1": "Liver lesion", ...}``, JSON-friendly) into specs with protocol codes."""
    by_name = {normalise_label(label.name): label for label in protocol_labels}
    specs = []
    for key, name in mapping.items():
        try:
            number = int(key)
        except (TypeError, ValueError) as error:
            raise AnnotationRejected(f"Segment map key {key!r} is not a segment number.") from error
        label = by_name.get(normalise_label(name))
        if label is None:
            raise AnnotationRejected(
                f"Unknown label: segment {number} {name!r} is not a protocol label "
                f"({', '.join(label.name for label in protocol_labels)})."
            )
        specs.append(SegmentSpec(number, label.name, label.category, label.type, label.color))
    return sorted(specs, key=lambda spec: spec.number)


def segment_specs_from_seg(seg: Dataset) -> list[SegmentSpec]:
    """The segments of an existing SEG (labels, codes, tracking identifiers) for building its next version."""
    specs = []
    for item in seg.SegmentSequence:
        if int(item.SegmentNumber) == 0:
            continue  # LABELMAP background
        category = code_from_item(item.SegmentedPropertyCategoryCodeSequence[0])
        type_code = code_from_item(item.SegmentedPropertyTypeCodeSequence[0])
        if category is None or type_code is None:
            raise AnnotationRejected(f"Segment {item.SegmentNumber} has no usable category/type code.")
        color = None
        if "RecommendedDisplayCIELabValue" in item:
            lab = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue)
            color = tuple(int(v) for v in lab.to_rgb(clip=True))
        specs.append(
            SegmentSpec(
                number=int(item.SegmentNumber),
                label=str(item.get("SegmentLabel", "")),
                category_code=category,
                type_code=type_code,
                color=color,  # type: ignore[arg-type]  # a 3-tuple from to_rgb
                tracking_uid=str(item.TrackingUID) if "TrackingUID" in item else None,
                tracking_id=str(item.TrackingID) if "TrackingID" in item else None,
            )
        )
    return specs


def _segment_description(spec: SegmentSpec) -> hd.seg.SegmentDescription:
    # One Tracking UID/ID per segment: highdicom writes them once in SegmentSequence, so every frame (slice)
    # of the segment shares them; a lesion is one segment, not one segment per slice.
    return hd.seg.SegmentDescription(
        segment_number=spec.number,
        segment_label=spec.label,
        segmented_property_category=spec.category_code,
        segmented_property_type=spec.type_code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=spec.tracking_uid,
        tracking_id=spec.tracking_id,
        display_color=hd.color.CIELabColor.from_rgb(*spec.color) if spec.color else None,
    )


def _with_tracking(spec: SegmentSpec) -> SegmentSpec:
    return replace(
        spec,
        tracking_uid=spec.tracking_uid or str(hd.UID()),
        tracking_id=spec.tracking_id or f"{spec.label} #{spec.number}",
    )


def build_segmentation(
    label_array: np.ndarray,
    source: SourceSeries | Sequence[SourceItem],
    segments: Sequence[SegmentSpec],
    *,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    author: str,
    seg_type: SegType = "BINARY",
    sop_instance_uid: str | None = None,
    series_description: str | None = None,
    transfer_syntax_uid: str | None = None,
    omit_empty_frames: bool = True,
    workers: int = 0,
) -> Dataset:
    """Build a SEG (BINARY or LABELMAP) from a (slices, rows, columns) label array on the source grid.

    ``label_array[k]`` is the slice ``k`` of the source sorted along the slice normal
    (:attr:`SourceSeries.positions`), the order in which :func:`read_label_array` returns it. Value 0 is
    background; any other value is the number of a segment in ``segments``.

    Raises
    ------
    AnnotationRejected
        When the array or the segments do not fit the source and each other.
    """
    if seg_type not in ("BINARY", "LABELMAP"):
        raise ValueError(f'seg_type must be "BINARY" or "LABELMAP", not {seg_type!r}.')
    series = _source_series(source)
    if not segments:
        raise AnnotationRejected("At least one segment is required to build a segmentation.")
    numbers = sorted(spec.number for spec in segments)
    if len(set(numbers)) != len(numbers):
        raise AnnotationRejected(f"Segment numbers must be unique, got {numbers}.")
    if seg_type == "BINARY" and numbers != list(range(1, len(numbers) + 1)):
        raise AnnotationRejected(f"BINARY segment numbers must be 1..{len(numbers)} without gaps, got {numbers}.")
    if numbers[0] < 1:
        raise AnnotationRejected(f"Segment numbers start at 1 (0 is background), got {numbers[0]}.")
    labels = check_label_array(label_array, series, numbers)
    if not np.any(labels):
        raise AnnotationRejected("Empty segmentation: the label array is all zero.")
    specs = [_with_tracking(spec) for spec in sorted(segments, key=lambda spec: spec.number)]
    transfer_syntax = transfer_syntax_uid or default_transfer_syntax(seg_type)
    seg = hd.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=labels,
        segmentation_type=seg_type,
        segment_descriptions=[_segment_description(spec) for spec in specs],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or str(hd.UID()),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=pacslabel.__version__,
        device_serial_number="0",
        content_creator_name=author,
        content_label="ANNOTATION",
        content_description=series_description,
        transfer_syntax_uid=transfer_syntax,
        omit_empty_frames=omit_empty_frames,
        workers=workers,
    )
    if series_description:
        seg.SeriesDescription = series_description
    logger.debug("Built %s SEG %s with %d frames.", seg_type, seg.SOPInstanceUID, seg.NumberOfFrames)
    return seg
