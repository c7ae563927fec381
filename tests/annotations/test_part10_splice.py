"""A saved version is written by re-encoding only the header elements it changes: the result is the same
file a full pydicom encode gives, dciodvfy-clean, and it reads back to the same label array."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.ohif_repairs import repair_ohif_segmentation
from pacslabel.annotations.part10_splice import (
    KEPT_RAW,
    PER_FRAME_FUNCTIONAL_GROUPS,
    ReceivedPart10,
    encode_part10,
    full_part10,
    read_part10,
)
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.seg_validation import validate_segmentation
from pacslabel.annotations.service import _stamp
from tests.annotations.conftest import DCIODVFY_UNKNOWN_LABELMAP_LINES
from tests.annotations.test_versions_env import ohif_like


def _received(ds: Dataset, *, implicit: bool = False) -> ReceivedPart10:
    buffer = BytesIO()
    if implicit:
        ds = copy.deepcopy(ds)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True)
    return read_part10(buffer.getvalue())


def _save_like_the_gateway(received: ReceivedPart10, source: SourceSeries,
                           labels: list[ProtocolLabel] | None = None, *, version: int = 2) -> Dataset:
    """The byte-relevant steps of annotations.service.save_annotation: repairs, validation, stamping."""
    repaired = repair_ohif_segmentation(received.dataset, source, protocol_labels=labels)
    validate_segmentation(repaired.dataset, source, protocol_labels=labels)
    return _stamp(repaired.dataset, author="reader1", author_role="annotator", task_series_uid="1.2.826.0.1.3",
                  series_number=3100, instance_number=version,
                  predecessor_sop_instance_uid="1.2.826.0.1.4" if version > 1 else None,
                  predecessor_sop_class_uid=str(received.dataset.SOPClassUID) if version > 1 else None)


def _dciodvfy_errors(data: bytes, tmp_path: Path, labelmap: bool) -> list[str]:
    executable = shutil.which("dciodvfy")
    assert executable, "dciodvfy (Debian package dicom3tools) is required for the conformance tests."
    path = tmp_path / "spliced.dcm"
    path.write_bytes(data)
    result = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line]
    return [line for line in errors if not (labelmap and line in DCIODVFY_UNKNOWN_LABELMAP_LINES)]


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_a_spliced_version_is_the_full_encode_byte_for_byte_and_reads_back_the_same_labels(
    make_seg: Callable[..., Dataset], source: SourceSeries, labels: np.ndarray, tmp_path: Path, seg_type: str
) -> None:
    received = _received(make_seg(seg_type))
    # The per-frame groups stay raw through repairs, validation and stamping: nothing converted them.
    assert isinstance(received.dataset.get_item(PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement)
    stamped = _save_like_the_gateway(received, source)

    spliced = encode_part10(stamped, received)

    for tag in KEPT_RAW:  # the per-frame groups and the 300-item SourceImageSequence: copied, not re-encoded
        assert isinstance(stamped.get_item(tag), RawDataElement)
    full = full_part10(stamped)
    assert spliced == full
    stored = dcmread(BytesIO(spliced))
    assert stored.ContentCreatorName == "reader1" and stored.InstanceNumber == 2
    assert stored.SOPInstanceUID != received.dataset.SOPInstanceUID
    np.testing.assert_array_equal(read_label_array(stored, source), labels)
    assert _dciodvfy_errors(spliced, tmp_path, labelmap=seg_type == "LABELMAP") == []


def test_an_ohif_seg_with_undefined_lengths_keeps_its_repairs_and_frames(
    make_seg: Callable[..., Dataset], source: SourceSeries, labels: np.ndarray,
    protocol_labels: list[ProtocolLabel], tmp_path: Path,
) -> None:
    """dcmjs writes sequences and items of undefined length: pydicom reads those eagerly; still spliced."""
    seg = ohif_like(make_seg())
    for segment in seg.SegmentSequence:
        del segment.SegmentAlgorithmName  # the fixture's "OHIF Brush" lacks its Type 1C partner, not our concern here
    for element in seg.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    received = _received(seg)
    stamped = _save_like_the_gateway(received, source, protocol_labels)

    spliced = encode_part10(stamped, received)

    assert spliced == full_part10(stamped)
    stored = dcmread(BytesIO(spliced))
    shared = stored.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in shared.PixelSpacing] == list(source.pixel_spacing)  # the repair is in the file
    assert stored.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    np.testing.assert_array_equal(read_label_array(stored, source), labels)
    assert _dciodvfy_errors(spliced, tmp_path, labelmap=False) == []


def test_items_of_undefined_length_in_a_sequence_of_explicit_length_are_still_spliced(
    make_seg: Callable[..., Dataset], source: SourceSeries, labels: np.ndarray
) -> None:
    """pydicom keeps such a per-frame sequence raw but cannot split it cheaply: it is read, not converted."""
    seg = make_seg()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        frame.is_undefined_length_sequence_item = True
    received = _received(seg)
    assert isinstance(received.dataset.get_item(PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement)
    stamped = _save_like_the_gateway(received, source)

    spliced = encode_part10(stamped, received)

    assert isinstance(stamped.get_item(PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement)  # so it was copied
    assert spliced == full_part10(stamped)
    np.testing.assert_array_equal(read_label_array(dcmread(BytesIO(spliced)), source), labels)


def test_implicit_vr_is_spliced_in_its_own_encoding(make_seg: Callable[..., Dataset], source: SourceSeries,
                                                   labels: np.ndarray) -> None:
    received = _received(make_seg(), implicit=True)
    stamped = _save_like_the_gateway(received, source, version=1)

    spliced = encode_part10(stamped, received)

    assert spliced == full_part10(stamped)
    stored = dcmread(BytesIO(spliced))
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    np.testing.assert_array_equal(read_label_array(stored, source), labels)


def test_a_replaced_per_frame_element_is_encoded_again_not_copied(make_seg: Callable[..., Dataset],
                                                                  source: SourceSeries) -> None:
    received = _received(make_seg())
    stamped = _save_like_the_gateway(received, source)
    frames = copy.deepcopy(stamped.PerFrameFunctionalGroupsSequence)
    frames[0].PlanePositionSequence[0].ImagePositionPatient = [1.0, 2.0, 3.0]
    stamped.PerFrameFunctionalGroupsSequence = frames

    spliced = encode_part10(stamped, received)

    assert spliced == full_part10(stamped)
    assert [float(v) for v in dcmread(BytesIO(spliced)).PerFrameFunctionalGroupsSequence[0]
            .PlanePositionSequence[0].ImagePositionPatient] == [1.0, 2.0, 3.0]


def test_without_received_bytes_the_encode_is_pydicoms(make_seg: Callable[..., Dataset]) -> None:
    seg = make_seg()
    assert encode_part10(seg) == full_part10(seg)
