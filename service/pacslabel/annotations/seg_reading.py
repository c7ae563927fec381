"""Read a SEG back onto the source slice grid.

Frames are placed by their ImagePositionPatient on the source's sorted slice grid, never by frame order:
highdicom and OHIF omit empty frames, and OHIF writes one frame per segment x slice, so frame ``i`` is not
slice ``i``. Validation runs first, so a frame that is off the grid is rejected rather than misplaced.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_pixels import decode_frames
from pacslabel.annotations.seg_validation import DEFAULT_TOLERANCE_MM, validate_segmentation


def _label_dtype(max_label: int) -> np.dtype:
    return np.dtype(np.uint8) if max_label <= np.iinfo(np.uint8).max else np.dtype(np.uint16)


def read_segment_masks(
    seg: Dataset,
    source: SourceSeries,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[int, np.ndarray]:
    """One boolean (slices, rows, columns) mask per segment number of ``seg`` (overlaps allowed).

    Segments without any frame get an all-false mask. FRACTIONAL frames count a pixel as inside when its
    value is above half of MaximumFractionalValue.
    """
    report = validate_segmentation(seg, source, tolerance_mm=tolerance_mm, check_pixels=False)
    frames = decode_frames(seg)
    masks = {number: np.zeros(source.shape, dtype=bool) for number in report.segment_labels if number != 0}
    threshold = 0
    if report.segmentation_type == "FRACTIONAL":
        threshold = int(seg.get("MaximumFractionalValue", 255)) // 2
    for placement in report.frames:
        frame = frames[placement.frame_number - 1]
        if placement.segment_number is None:  # LABELMAP: pixel value = segment number
            for number, mask in masks.items():
                mask[placement.slice_index] |= frame == number
        else:
            masks[placement.segment_number][placement.slice_index] |= frame > threshold
    return masks


def read_label_array(
    seg: Dataset,
    source: SourceSeries,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> np.ndarray:
    """The SEG as a (slices, rows, columns) label array on the source grid: 0 background, else segment number.

    Works for BINARY and LABELMAP SEGs from highdicom and from OHIF. Raises :class:`AnnotationRejected` when
    two segments overlap (a label array cannot hold that; use :func:`read_segment_masks`) or the SEG is
    FRACTIONAL.
    """
    report = validate_segmentation(seg, source, tolerance_mm=tolerance_mm, check_pixels=False)
    if report.segmentation_type == "FRACTIONAL":
        raise AnnotationRejected(
            "A FRACTIONAL segmentation cannot be read as a label array without a threshold; use read_segment_masks."
        )
    frames = decode_frames(seg)
    numbers = [number for number in report.segment_labels if number != 0]
    labels = np.zeros(source.shape, dtype=_label_dtype(max(numbers, default=0)))
    for placement in report.frames:
        frame = frames[placement.frame_number - 1]
        target = labels[placement.slice_index]
        if placement.segment_number is None:
            unknown = set(np.unique(frame).tolist()) - {0, *numbers}
            if unknown:
                raise AnnotationRejected(
                    f"Frame {placement.frame_number} holds label values {sorted(unknown)} that are not segment "
                    "numbers of SegmentSequence."
                )
            inside = frame != 0
            value = frame
        else:
            inside = frame != 0
            value = np.full(frame.shape, placement.segment_number)
        clash = inside & (target != 0) & (target != value)
        if np.any(clash):
            raise AnnotationRejected(
                f"Segments overlap on source slice {placement.slice_index + 1} (frame {placement.frame_number}); a "
                "label array cannot hold overlapping segments, read them with read_segment_masks."
            )
        target[inside] = value[inside]
    return labels
