"""Validation reads the per-frame groups without building Datasets and checks them as arrays: the answer is the
one the pydicom Dataset view gives, and a SEG with several problems is refused for its earliest frame."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.part10_splice import PER_FRAME_FUNCTIONAL_GROUPS, full_part10, read_part10
from pacslabel.annotations.seg_pixels import any_pixel_set, decode_frames
from pacslabel.annotations.seg_validation import validate_segmentation


def _converted(data: bytes) -> Dataset:
    """The same SEG with every nested item converted by pydicom (the slow, obvious view)."""
    ds = dcmread(BytesIO(data))
    for element in ds.iterall():
        _ = element.value
    return ds


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_raw_and_converted_per_frame_groups_place_the_frames_alike(make_seg: Callable[..., Dataset],
                                                                   source: SourceSeries, seg_type: str) -> None:
    data = full_part10(make_seg(seg_type))
    received = read_part10(data)
    assert isinstance(received.dataset.get_item(PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement)

    fast = validate_segmentation(received.dataset, source)
    slow = validate_segmentation(_converted(data), source)

    assert fast == slow
    assert len(fast.frames) == int(received.dataset.NumberOfFrames) > 0
    # Still raw: validation converted nothing, so the received bytes can be reused.
    assert isinstance(received.dataset.get_item(PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement)


def test_the_earliest_failing_frame_is_named_whatever_the_check(make_seg: Callable[..., Dataset],
                                                                source: SourceSeries) -> None:
    seg = make_seg()
    frames = seg.PerFrameFunctionalGroupsSequence
    position = frames[6].PlanePositionSequence[0].ImagePositionPatient
    frames[6].PlanePositionSequence[0].ImagePositionPatient = [position[0], position[1], float(position[2]) + 2.5]
    frames[3].PixelMeasuresSequence = [Dataset()]
    frames[3].PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    received = read_part10(full_part10(seg))

    with pytest.raises(AnnotationRejected) as caught:
        validate_segmentation(received.dataset, source)

    assert caught.value.reason == "PixelSpacing of frame 4 [0.5, 0.5] differs from the source's [0.8, 0.8]."


def test_a_single_set_bit_at_the_very_end_makes_a_seg_non_empty(make_seg: Callable[..., Dataset],
                                                                source: SourceSeries) -> None:
    labels = np.zeros(source.shape, dtype=np.uint8)
    labels[-1, -1, -1] = 1
    seg = read_part10(full_part10(make_seg(label_array=labels))).dataset

    assert any_pixel_set(seg) and bool(np.any(decode_frames(seg)))
    validate_segmentation(seg, source)


def test_pixel_data_shorter_than_the_frames_are_refused_with_both_lengths(make_seg: Callable[..., Dataset],
                                                                          source: SourceSeries) -> None:
    seg = make_seg()
    frames = int(seg.NumberOfFrames)
    seg.PixelData = seg.PixelData[:-2]
    with pytest.raises(AnnotationRejected) as caught:
        validate_segmentation(read_part10(full_part10(seg)).dataset, source)
    need = frames * 64 * 64 // 8
    assert caught.value.reason == (
        f"PixelData holds {need - 2} bytes, but NumberOfFrames ({frames}) x Rows (64) x Columns (64) x "
        f"BitsAllocated (1) needs {need} bytes; the pixel data are truncated.")


def test_unreadable_per_frame_values_are_refused_naming_the_frame(make_seg: Callable[..., Dataset],
                                                                  source: SourceSeries) -> None:
    data = bytearray(full_part10(make_seg()))
    # The first ImagePositionPatient (0020,0032) DS in the per-frame groups: same length, letters instead.
    at = data.index(b"\x20\x00\x32\x00DS", data.index(b"\x00\x52\x30\x92"))
    length = int.from_bytes(data[at + 6:at + 8], "little")
    data[at + 8:at + 8 + length] = b"x" * length

    with pytest.raises(AnnotationRejected) as caught:
        validate_segmentation(read_part10(bytes(data)).dataset, source)

    assert caught.value.reason.startswith("Frame 1: ImagePositionPatient (0020,0032) holds ['")
    assert caught.value.reason.endswith("'], which are not decimal numbers.")


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_the_item_walker_yields_what_pydicoms_element_reader_yields(make_seg: Callable[..., Dataset],
                                                                     seg_type: str) -> None:
    from pydicom.filereader import data_element_generator

    from pacslabel.annotations import functional_groups

    received = read_part10(full_part10(make_seg(seg_type)))
    raw = received.dataset.get_item(PER_FRAME_FUNCTIONAL_GROUPS)
    bodies = functional_groups._split_items(raw.value)
    assert bodies
    nested = list(bodies)
    compared = 0
    while nested:  # every item, and every item of every sequence inside it
        body = nested.pop()
        walked = functional_groups.walk_explicit_le(body)
        assert walked is not None
        reference = list(data_element_generator(BytesIO(body), False, True))
        assert [(e.tag, e.VR, e.length, e.value) for e in walked.values()] == [
            (e.tag, e.VR, e.length, e.value) for e in reference]
        compared += 1
        for element in reference:
            if element.VR == "SQ" and element.value:
                nested.extend(functional_groups._split_items(element.value) or [])
    assert compared > 4 * len(bodies)


def test_the_item_walker_hands_irregular_bytes_to_pydicom() -> None:
    from pacslabel.annotations.functional_groups import walk_explicit_le

    good = b"\x20\x00\x32\x00DS\x04\x001\\2 "
    assert walk_explicit_le(good) is not None
    assert walk_explicit_le(good[:-1]) is None  # the value runs past the end
    assert walk_explicit_le(b"\x20\x00\x32\x00ds\x04\x001\\2 ") is None  # not a VR
    assert walk_explicit_le(b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff") is None  # undefined length
