"""deidentify_bytes: Part-10 in, Part-10 out, PHI-free errors for what cannot be handled."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.multival import MultiValue

from pacslabel.deid import DeidentificationError, DeidentifiedInstance, Deidentifier
from pacslabel.deid.uid_remapping import CLASS_UID_TAGS, is_well_known_uid
from tests.deid.builders import ACCESSION, KEY, ORIGINAL_SOP_UID, PATIENT_ID, PATIENT_NAME, make_ct, to_bytes


def test_round_trip_gives_new_uids_pseudonyms_and_catalog_fields() -> None:
    deid = Deidentifier(KEY)
    result = deid.deidentify_bytes(to_bytes(make_ct()))
    assert isinstance(result, DeidentifiedInstance)
    ds = dcmread(io.BytesIO(result.data))
    assert result.sop_instance_uid == ds.SOPInstanceUID == deid.remap_uid(ORIGINAL_SOP_UID)
    assert result.series_instance_uid == ds.SeriesInstanceUID
    assert result.study_instance_uid == ds.StudyInstanceUID
    assert result.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert result.patient_id == ds.PatientID and result.patient_id.startswith("PL-")
    assert result.original_patient_key == deid.pseudonyms.patient_key(PATIENT_ID)
    assert PATIENT_ID not in result.original_patient_key
    attrs = result.attributes
    assert attrs["Modality"] == "CT"
    assert attrs["Rows"] == 2 and attrs["SeriesNumber"] == 3 and attrs["InstanceNumber"] == 7
    assert attrs["PatientSex"] == "M" and attrs["PatientAge"] == "045Y"
    assert attrs["StudyDate"] == ds.StudyDate != "20230314"
    assert "InstitutionName" not in attrs
    assert ds.PixelData == b"\x01\x00\x02\x00\x03\x00\x04\x00"  # pixels copied through untouched
    text = repr(attrs)
    for original in (PATIENT_ID, ACCESSION, "Fairweather", "20230314"):
        assert original not in text


def test_same_bytes_give_identical_output() -> None:
    raw = to_bytes(make_ct())
    assert Deidentifier(KEY).deidentify_bytes(raw).data == Deidentifier(KEY).deidentify_bytes(raw).data


def test_dataset_without_file_meta_is_accepted() -> None:
    ds = make_ct()
    del ds.file_meta  # as pynetdicom hands a received dataset over: no preamble, no meta
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True)
    assert out.getvalue()[:2] == b"\x08\x00"
    result = Deidentifier(KEY).deidentify_bytes(out.getvalue())
    assert dcmread(io.BytesIO(result.data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"this is a text file, not a DICOM dataset at all" * 4, "DICOM"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00", "parseable|no data elements|missing"),
    ],
)
def test_non_dicom_input_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(DeidentificationError, match=reason):
        Deidentifier(KEY).deidentify_bytes(raw)


def test_truncated_pixel_data_is_refused() -> None:
    raw = to_bytes(make_ct())
    with pytest.raises(DeidentificationError, match="truncated"):
        Deidentifier(KEY).deidentify_bytes(raw[:-3])


def test_pydicom_truncated_test_files_are_refused() -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        path = get_testdata_file(name)
        assert path is not None
        with open(path, "rb") as handle, pytest.raises(DeidentificationError, match="truncated"):
            Deidentifier(KEY).deidentify_bytes(handle.read())


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SOPClassUID"])
def test_missing_sop_uids_are_refused(keyword: str) -> None:
    ds = make_ct()
    delattr(ds, keyword)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=False)
    with pytest.raises(
        DeidentificationError,
        match=keyword.replace("UID", " UID").replace("SOPInstance", "SOP Instance").replace("SOPClass", "SOP Class"),
    ):
        Deidentifier(KEY).deidentify_bytes(out.getvalue())


def test_unknown_transfer_syntax_is_refused() -> None:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.10.9999.1"
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True)
    with pytest.raises(DeidentificationError, match="transfer syntax"):
        Deidentifier(KEY).deidentify_bytes(out.getvalue())


def test_error_messages_carry_no_phi() -> None:
    ds = make_ct()
    del ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=False)
    with pytest.raises(DeidentificationError) as caught:
        Deidentifier(KEY).deidentify_bytes(out.getvalue())
    message = str(caught.value)
    for original in (PATIENT_ID, PATIENT_NAME, "Fairweather", ACCESSION):
        assert original not in message


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "rtplan.dcm",
        "rtstruct.dcm",
        "reportsi.dcm",
        "examples_overlay.dcm",
        "liver_1frame.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",
        "waveform_ecg.dcm",
        "SC_rgb_small_odd.dcm",
    ],
)
def test_pydicom_sample_files_leave_no_private_tags_and_no_original_uids(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        raw = handle.read()
    original = dcmread(io.BytesIO(raw), force=True)
    instance_uids = {
        str(value)
        for e in original.iterall()
        if e.VR == "UI" and e.value and e.tag not in CLASS_UID_TAGS
        for value in (e.value if isinstance(e.value, list | MultiValue) else [e.value])
    }
    if "MediaStorageSOPInstanceUID" in original.file_meta:
        instance_uids.add(str(original.file_meta.MediaStorageSOPInstanceUID))
    instance_uids = {uid for uid in instance_uids if not is_well_known_uid(uid)}
    result = dcmread(io.BytesIO(Deidentifier(KEY).deidentify_bytes(raw).data))
    assert not [e for e in result.iterall() if e.tag.is_private]
    left = {
        str(v)
        for e in result.iterall()
        if e.VR == "UI" and e.value and e.tag not in CLASS_UID_TAGS
        for v in (e.value if isinstance(e.value, list | MultiValue) else [e.value])
    }
    left.add(str(result.file_meta.MediaStorageSOPInstanceUID))
    assert not left & instance_uids
