"""SEG from a label array: pixel-exact round trip, conformance (dciodvfy), one tracking UID per lesion."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_building import build_segmentation, segment_specs_from_seg
from pacslabel.annotations.seg_reading import read_label_array, read_segment_masks
from pacslabel.annotations.seg_validation import validate_segmentation
from tests.annotations.conftest import dciodvfy_errors


def written_and_read(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_label_array_round_trips_to_the_identical_array(
    seg_type: str, make_seg: Callable[..., Dataset], source: SourceSeries, labels: np.ndarray
) -> None:
    seg = written_and_read(make_seg(seg_type))

    back = read_label_array(seg, source)

    assert back.shape == labels.shape
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    # Empty slices are omitted, so frame order is not slice order: placement is by geometry.
    report = validate_segmentation(seg, source)
    assert report.covered_slices == (2, 3, 4, 5, 6, 7, 8)


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_built_seg_passes_dciodvfy_without_errors(
    seg_type: str, make_seg: Callable[..., Dataset], tmp_path: Path
) -> None:
    seg = make_seg(seg_type)

    assert dciodvfy_errors(seg, tmp_path) == []


def test_labelmap_is_compressed_lossless(make_seg: Callable[..., Dataset]) -> None:
    seg = make_seg("LABELMAP")

    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert seg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless


def test_a_lesion_keeps_one_segment_and_one_tracking_uid_across_its_slices(
    make_seg: Callable[..., Dataset], source: SourceSeries
) -> None:
    seg = make_seg("BINARY")

    lesion = [item for item in seg.SegmentSequence if item.SegmentNumber == 1]
    assert len(lesion) == 1 and lesion[0].TrackingUID and lesion[0].TrackingID
    frames = [p for p in validate_segmentation(seg, source).frames if p.segment_number == 1]
    assert sorted(p.slice_index for p in frames) == [3, 4, 5]
    assert len({str(item.TrackingUID) for item in seg.SegmentSequence}) == 3


def test_next_version_keeps_the_tracking_identity_of_each_segment(
    make_seg: Callable[..., Dataset], labels: np.ndarray, source: SourceSeries
) -> None:
    first = make_seg("BINARY")
    specs = segment_specs_from_seg(first)
    edited = labels.copy()
    edited[6, 10:20, 12:22] = 1  # the lesion grows onto one more slice

    second = build_segmentation(
        edited,
        source,
        specs,
        series_instance_uid=first.SeriesInstanceUID,
        series_number=300,
        instance_number=2,
        author="Reader^One",
    )

    assert [str(i.TrackingUID) for i in second.SegmentSequence] == [str(i.TrackingUID) for i in first.SegmentSequence]
    assert [s.label for s in specs] == ["Liver lesion", "Cyst", "Liver"]
    np.testing.assert_array_equal(read_label_array(second, source), edited)


def test_binary_segments_read_as_masks_match_the_label_array(
    make_seg: Callable[..., Dataset], source: SourceSeries, labels: np.ndarray
) -> None:
    masks = read_segment_masks(make_seg("BINARY"), source)

    assert set(masks) == {1, 2, 3}
    for number, mask in masks.items():
        np.testing.assert_array_equal(mask, labels == number)


def test_single_segment_seg_validates_and_round_trips(source: SourceSeries, labels: np.ndarray,
                                                     segment_specs: list) -> None:  # type: ignore[type-arg]
    # highdicom moves SegmentIdentificationSequence into the shared groups when there is one segment.
    single = np.where(labels == 1, 1, 0).astype(np.uint8)
    seg = written_and_read(build_segmentation(single, source, segment_specs[:1], series_instance_uid=str(hd.UID()),
                                              series_number=300, instance_number=1, author="Reader^One"))
    validate_segmentation(seg, source)
    np.testing.assert_array_equal(read_label_array(seg, source), single)
