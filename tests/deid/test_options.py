"""Per-project options: dates, patient characteristics, device/institution identity, UIDs, private, graphics."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacslabel.deid import Deidentifier, DeidOptions, add_deidentification_method_code
from pacslabel.deid.replacement_values import age_bracket
from tests.deid.builders import KEY, ORIGINAL_SOP_UID, PRIVATE_CREATOR, make_ct


def days_between(a: str, b: str) -> int:
    return (dt.datetime.strptime(b[:8], "%Y%m%d") - dt.datetime.strptime(a[:8], "%Y%m%d")).days


def test_modified_dates_shift_every_date_of_a_patient_by_the_same_keyed_offset() -> None:
    deid = Deidentifier(KEY)
    ds = deid.deidentify_dataset(make_ct())
    offset = days_between("20230314", ds.StudyDate)
    assert offset < 0
    assert days_between("20230314", ds.SeriesDate) == offset
    assert days_between("20230314", ds.AcquisitionDateTime) == offset
    assert ds.AcquisitionDateTime.endswith("101500.250000")  # whole-day shift keeps the time of day
    assert ds.StudyTime == "101500"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_interval_between_two_studies_of_one_patient_survives_separate_runs() -> None:
    first = Deidentifier(KEY).deidentify_dataset(make_ct(StudyDate="20230314"))
    second = Deidentifier(KEY).deidentify_dataset(
        make_ct(StudyDate="20230902", StudyInstanceUID="1.2.826.0.1.3680043.10.1001.2")
    )
    assert days_between(first.StudyDate, second.StudyDate) == days_between("20230314", "20230902")


def test_two_patients_get_independent_offsets() -> None:
    deid = Deidentifier(KEY)
    offsets = {
        days_between("20230314", deid.deidentify_dataset(make_ct(PatientID=f"P{n}")).StudyDate) for n in range(8)
    }
    assert len(offsets) > 1


def test_full_dates_are_kept_and_recorded_as_unmodified() -> None:
    options = DeidOptions(retain_longitudinal_full_dates=True, retain_longitudinal_modified_dates=False)
    ds = Deidentifier(KEY, options).deidentify_dataset(make_ct())
    assert ds.StudyDate == "20230314"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


def test_without_a_date_option_dates_are_emptied_or_removed() -> None:
    options = DeidOptions(retain_longitudinal_modified_dates=False)
    ds = Deidentifier(KEY, options).deidentify_dataset(make_ct())
    assert ds.StudyDate == ""
    assert "SeriesDate" not in ds  # X/D, Type 3 in CT
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


@pytest.mark.parametrize(
    ("age", "bracket"),
    [
        ("047Y", "045Y"),
        ("045Y", "045Y"),
        ("004Y", "000Y"),
        ("089Y", "085Y"),
        ("090Y", "090Y"),
        ("103Y", "090Y"),
        ("006M", "000Y"),
        ("030W", "000Y"),
        ("400D", "000Y"),
        ("nonsense", None),
    ],
)
def test_age_brackets_and_90_plus_collapse(age: str, bracket: str | None) -> None:
    assert age_bracket(age) == bracket


def test_patient_characteristics_keep_sex_size_weight_and_bracket_the_age() -> None:
    ds = Deidentifier(KEY).deidentify_dataset(make_ct(PatientAge="093Y"))
    assert (ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize) == ("M", "090Y", 81.5, 1.82)


def test_without_patient_characteristics_they_are_removed_or_emptied() -> None:
    ds = Deidentifier(KEY, DeidOptions(retain_patient_characteristics=False)).deidentify_dataset(make_ct())
    assert ds.PatientSex == ""
    assert "PatientAge" not in ds and "PatientWeight" not in ds and "PatientSize" not in ds


def test_retain_device_and_institution_identity() -> None:
    options = DeidOptions(retain_device_identity=True, retain_institution_identity=True)
    ds = Deidentifier(KEY, options).deidentify_dataset(make_ct())
    assert ds.StationName == "LAKECT01"
    assert ds.DeviceSerialNumber == "SN-778812"
    assert ds.InstitutionName == "Lakeside General Hospital"
    defaults = Deidentifier(KEY).deidentify_dataset(make_ct())
    assert "StationName" not in defaults and "InstitutionName" not in defaults


def test_retain_uids_keeps_every_uid() -> None:
    ds = Deidentifier(KEY, DeidOptions(retain_uids=True)).deidentify_dataset(make_ct())
    assert ds.SOPInstanceUID == ORIGINAL_SOP_UID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ORIGINAL_SOP_UID


def test_retain_safe_private_keeps_only_listed_private_elements() -> None:
    options = DeidOptions(retain_safe_private=True, safe_private_tags=frozenset({(PRIVATE_CREATOR, 0x02)}))
    ds = Deidentifier(KEY, options).deidentify_dataset(make_ct())
    private = {elem.tag: elem.value for elem in ds if elem.tag.is_private}
    assert private[0x00290010] == PRIVATE_CREATOR
    assert 0x00291001 not in private  # not on the list
    assert private[0x00291002] != "20230314"  # kept, but its date is shifted like any date
    assert len(private) == 2


def test_safe_private_list_is_ignored_without_the_option() -> None:
    options = DeidOptions(safe_private_tags=frozenset({(PRIVATE_CREATOR, 0x02)}))
    ds = Deidentifier(KEY, options).deidentify_dataset(make_ct())
    assert not [elem for elem in ds if elem.tag.is_private]


def graphic_annotation() -> Dataset:
    text = Dataset()
    text.UnformattedTextValue = "Lesion seen by Okonkwo on 2023-03-14"
    text.AnchorPointAnnotationUnits = "PIXEL"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    return annotation


def test_graphic_annotations_are_dummied_without_clean_graphics_and_cleaned_with_it() -> None:
    basic = Deidentifier(KEY).deidentify_dataset(make_ct(GraphicAnnotationSequence=Sequence([graphic_annotation()])))
    text = basic.GraphicAnnotationSequence[0].TextObjectSequence[0]
    assert text.UnformattedTextValue == "ANONYMIZED"
    assert text.AnchorPointAnnotationUnits == "PIXEL"  # coded values survive the dummy
    cleaned = Deidentifier(KEY, DeidOptions(clean_graphics=True)).deidentify_dataset(
        make_ct(GraphicAnnotationSequence=Sequence([graphic_annotation()]))
    )
    value = cleaned.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert value.startswith("Lesion seen by")
    assert "Okonkwo" not in value and "2023" not in value


def sr_content() -> Dataset:
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = "Nodule, compare with Fairweather prior of 03/14/2023"
    return item


def test_structured_content_is_dummied_by_default_and_cleaned_with_the_option() -> None:
    sr_class = "1.2.840.10008.5.1.4.1.1.88.33"
    basic = Deidentifier(KEY).deidentify_dataset(
        make_ct(SOPClassUID=sr_class, Modality="SR", ContentSequence=Sequence([sr_content()]))
    )
    item = basic.ContentSequence[0]
    assert item.TextValue == "ANONYMIZED"
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert item.ValueType == "TEXT"
    cleaned = Deidentifier(KEY, DeidOptions(clean_structured_content=True)).deidentify_dataset(
        make_ct(SOPClassUID=sr_class, Modality="SR", ContentSequence=Sequence([sr_content()]))
    )
    text = cleaned.ContentSequence[0].TextValue
    assert text.startswith("Nodule, compare with")
    assert "Fairweather" not in text and "2023" not in text


def test_pixel_step_can_add_clean_pixel_data_code() -> None:
    ds = Deidentifier(KEY).deidentify_dataset(make_ct())
    add_deidentification_method_code(ds, "113101")
    add_deidentification_method_code(ds, "113101")  # idempotent
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113105", "113107", "113108"]
    with pytest.raises(ValueError, match="CID 7050"):
        add_deidentification_method_code(ds, "999999")


def test_options_validate_the_safe_private_list() -> None:
    with pytest.raises(ValueError, match="safe_private_tags"):
        DeidOptions(safe_private_tags=frozenset({("ACME", 0x1001)}))
