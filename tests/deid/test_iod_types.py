"""Compound codes resolved by the attribute's type in the object's IOD."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from pacslabel.deid import Deidentifier
from pacslabel.deid.iod_types import iod_type, resolve_compound
from tests.deid.builders import KEY, ORIGINAL_SOP_UID, make_ct

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.mark.parametrize(
    ("code", "attribute_type", "expected"),
    [
        ("Z/D", "1", "D"),
        ("Z/D", "2", "Z"),
        ("Z/D", "3", "Z"),
        ("X/Z", "2", "Z"),
        ("X/Z", "3", "X"),
        ("X/D", "1", "D"),
        ("X/D", "3", "X"),
        ("X/Z/D", "1", "D"),
        ("X/Z/D", "1C", "D"),
        ("X/Z/D", "2", "Z"),
        ("X/Z/D", "3", "X"),
        ("X/Z/U*", "1", "U"),
        ("X/Z/U*", "3", "X"),
    ],
)
def test_resolution_keeps_type_1_and_2_present(code: str, attribute_type: str, expected: str) -> None:
    assert resolve_compound(code, attribute_type, nested=False) == expected


def test_inside_sequences_reference_sequences_are_kept_with_new_uids() -> None:
    assert resolve_compound("X/Z/U*", None, nested=True) == "U"
    assert resolve_compound("X/Z/D", None, nested=True) == "X"


def test_device_serial_number_is_type_1_in_segmentation_and_type_3_in_ct() -> None:
    assert iod_type(SEGMENTATION, 0x00181000) == "1"
    assert iod_type(CTImageStorage, 0x00181000) == "3"


def test_device_serial_number_removed_from_ct_but_dummied_in_seg() -> None:
    deid = Deidentifier(KEY)
    ct = deid.deidentify_dataset(make_ct())
    assert "DeviceSerialNumber" not in ct
    seg = deid.deidentify_dataset(make_ct(SOPClassUID=SEGMENTATION, Modality="SEG"))
    assert seg.DeviceSerialNumber and seg.DeviceSerialNumber != "SN-778812"


def test_content_creator_name_in_seg_is_emptied_not_removed() -> None:
    seg = Deidentifier(KEY).deidentify_dataset(
        make_ct(SOPClassUID=SEGMENTATION, Modality="SEG", ContentCreatorName="Reader^Rita")
    )
    assert "ContentCreatorName" in seg
    assert seg.ContentCreatorName == ""


def test_referenced_pps_sequence_is_empty_in_sr_and_removed_in_ct() -> None:
    pps = Dataset()
    pps.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    pps.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1001.77"
    deid = Deidentifier(KEY)
    sr = deid.deidentify_dataset(
        make_ct(SOPClassUID=COMPREHENSIVE_SR, Modality="SR", ReferencedPerformedProcedureStepSequence=Sequence([pps]))
    )
    assert "ReferencedPerformedProcedureStepSequence" in sr
    assert len(sr.ReferencedPerformedProcedureStepSequence) == 0
    ct = deid.deidentify_dataset(make_ct(ReferencedPerformedProcedureStepSequence=Sequence([pps])))
    assert "ReferencedPerformedProcedureStepSequence" not in ct


def test_source_image_sequence_inside_derivation_image_sequence_is_kept_and_remapped() -> None:
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = ORIGINAL_SOP_UID
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([source])
    frame = Dataset()
    frame.DerivationImageSequence = Sequence([derivation])
    deid = Deidentifier(KEY)
    seg = deid.deidentify_dataset(
        make_ct(SOPClassUID=SEGMENTATION, Modality="SEG", PerFrameFunctionalGroupsSequence=Sequence([frame]))
    )
    kept = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert kept.ReferencedSOPInstanceUID == deid.remap_uid(ORIGINAL_SOP_UID)
    assert kept.ReferencedSOPClassUID == CTImageStorage


def test_top_level_source_image_sequence_of_ct_is_removed() -> None:
    source = Dataset()
    source.ReferencedSOPInstanceUID = ORIGINAL_SOP_UID
    ct = Deidentifier(KEY).deidentify_dataset(make_ct(SourceImageSequence=Sequence([source])))
    assert "SourceImageSequence" not in ct
