"""Forged SEGs are rejected, each with a message that says precisely what is wrong."""

from __future__ import annotations

import copy
from collections.abc import Callable

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_validation import validate_segmentation
from pacslabel.errors import PacslabelError


@pytest.fixture
def seg(make_seg: Callable[..., Dataset]) -> Dataset:
    return make_seg("BINARY")


def rejected(seg: Dataset, source: SourceSeries, **kwargs: object) -> str:
    with pytest.raises(AnnotationRejected) as caught:
        validate_segmentation(seg, source, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def shift_frames(seg: Dataset, dz: float) -> Dataset:
    forged = copy.deepcopy(seg)
    for frame in forged.PerFrameFunctionalGroupsSequence:
        # A fresh item per frame: highdicom shares one position item between frames on the same slice.
        x, y, z = (float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        position = Dataset()
        position.ImagePositionPatient = [x, y, z + dz]
        frame.PlanePositionSequence = [position]
    return forged


def test_a_valid_seg_passes_and_reports_its_segments(
    seg: Dataset, source: SourceSeries, protocol_labels: list[ProtocolLabel]
) -> None:
    report = validate_segmentation(seg, source, protocol_labels=protocol_labels)

    assert report.segmentation_type == "BINARY"
    assert report.segment_labels == {1: "Liver lesion", 2: "Cyst", 3: "Liver"}
    assert report.protocol_labels == {1: "Liver lesion", 2: "Cyst", 3: "Liver"}
    assert report.max_distance_mm < 1e-6


def test_rejection_is_a_value_error_with_an_http_status(seg: Dataset, source: SourceSeries) -> None:
    seg.StudyInstanceUID = str(hd.UID())

    with pytest.raises(AnnotationRejected) as caught:
        validate_segmentation(seg, source)

    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PacslabelError)
    assert caught.value.status_code == 422


def test_seg_of_another_study_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    other = str(hd.UID())
    seg.StudyInstanceUID = other

    message = rejected(seg, source)

    assert message == (
        f"The SEG belongs to another study: StudyInstanceUID {other} differs from the source study "
        f"{source.study_instance_uid}."
    )


def test_seg_of_another_series_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    other = str(hd.UID())
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = other

    message = rejected(seg, source)

    assert message.startswith(
        f"ReferencedSeriesSequence does not reference the source series {source.series_instance_uid}"
    )
    assert other in message


def test_shifted_geometry_is_rejected_with_the_distance(seg: Dataset, source: SourceSeries) -> None:
    message = rejected(shift_frames(seg, 2.5), source)

    assert message.startswith("Shifted geometry: frame 1 is 2.50 mm from the nearest source slice")


def test_a_whole_slice_shift_is_caught_by_the_frame_source_reference(seg: Dataset, source: SourceSeries) -> None:
    # +5 mm lands exactly on the next slice: only the per-frame source image reference reveals the shift.
    message = rejected(shift_frames(seg, 5.0), source)

    assert message.startswith("Shifted geometry: frame 1 lies on source slice")
    assert "DerivationImageSequence names the image of slice" in message


def test_in_plane_shift_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg = shift_frames(seg, 0.0)  # unshare the position items first
    frame = seg.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0]
    x, y, z = (float(v) for v in frame.ImagePositionPatient)
    frame.ImagePositionPatient = [x + 0.8, y, z]

    assert rejected(seg, source).startswith("Shifted geometry: frame 3 is 0.80 mm from the nearest source slice")


def test_foreign_frame_of_reference_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    other = str(hd.UID())
    seg.FrameOfReferenceUID = other

    assert rejected(seg, source) == (
        f"Foreign Frame of Reference: FrameOfReferenceUID {other} differs from the source's "
        f"{source.frame_of_reference_uid}."
    )


def test_wrong_rows_and_columns_are_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg.Rows = 32

    assert rejected(seg, source) == "Rows x Columns of the SEG (32 x 64) differ from the source's (64 x 64)."


def test_a_ct_image_disguised_as_seg_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg.SOPClassUID = CTImageStorage

    message = rejected(seg, source)

    assert message.startswith("Not a segmentation: a non-SEG disguised as SEG although its Modality is SEG.")
    assert "CT Image Storage" in message


def test_a_seg_without_segment_sequence_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    del seg.SegmentSequence

    assert rejected(seg, source) == (
        "Not a segmentation: a non-SEG disguised as SEG; SegmentSequence is missing or empty."
    )


def test_a_reference_to_a_non_existent_source_instance_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    ghost = str(hd.UID())
    seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[3].ReferencedSOPInstanceUID = ghost

    assert rejected(seg, source) == (
        f"ReferencedSeriesSequence references SOP instance {ghost}, which does not exist in the source series "
        f"{source.series_instance_uid}."
    )


def test_a_frame_derived_from_a_non_existent_instance_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    ghost = str(hd.UID())
    frame = seg.PerFrameFunctionalGroupsSequence[1]
    frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = ghost
    del seg.SourceImageSequence  # so the per-frame check is the one that fires

    assert rejected(seg, source).startswith(f"DerivationImageSequence of frame 2 references SOP instance {ghost}")


def test_unknown_label_is_rejected(seg: Dataset, source: SourceSeries, protocol_labels: list[ProtocolLabel]) -> None:
    segment = seg.SegmentSequence[1]
    segment.SegmentLabel = "Kidney stone"
    segment.SegmentedPropertyTypeCodeSequence[0].CodeValue = "95570007"

    message = rejected(seg, source, protocol_labels=protocol_labels)

    assert message == (
        "Unknown label: segment 2 'Kidney stone' does not map to a label of the protocol "
        "(Liver lesion, Cyst, Liver) by name or by category/type code."
    )


def test_labels_map_case_insensitively_or_by_codes(
    seg: Dataset, source: SourceSeries, protocol_labels: list[ProtocolLabel]
) -> None:
    seg.SegmentSequence[0].SegmentLabel = "  LIVER   lesion "
    seg.SegmentSequence[1].SegmentLabel = "my cyst"  # not a name, but its codes are the Cyst codes

    report = validate_segmentation(seg, source, protocol_labels=protocol_labels)

    assert report.protocol_labels == {1: "Liver lesion", 2: "Cyst", 3: "Liver"}


def test_rotated_orientation_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 0.99, 0.141]

    assert rejected(seg, source).startswith("ImageOrientationPatient of frame 1 ")


def test_different_pixel_spacing_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [0.7, 0.7]

    assert rejected(seg, source) == "PixelSpacing of frame 1 [0.7, 0.7] differs from the source's [0.8, 0.8]."


def test_empty_segmentation_is_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg.PixelData = bytes(len(seg.PixelData))

    assert rejected(seg, source) == "Empty segmentation: every frame of the SEG is zero."


def test_two_frames_for_one_segment_on_one_slice_are_rejected(seg: Dataset, source: SourceSeries) -> None:
    seg = shift_frames(seg, 0.0)
    frames = seg.PerFrameFunctionalGroupsSequence
    frames[1].PlanePositionSequence[0].ImagePositionPatient = frames[0].PlanePositionSequence[0].ImagePositionPatient
    frames[1].DerivationImageSequence = frames[0].DerivationImageSequence

    assert rejected(seg, source).startswith("Frames 1 and 2 both hold segment 1 on source slice")
