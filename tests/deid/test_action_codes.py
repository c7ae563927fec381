"""Each Table E.1-1 action code, applied to a small CT header."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacslabel.deid import Deidentifier
from tests.deid.builders import (
    ACCESSION,
    KEY,
    ORIGINAL_FOR_UID,
    ORIGINAL_SERIES_UID,
    ORIGINAL_SOP_UID,
    ORIGINAL_STUDY_UID,
    PATIENT_ID,
    make_ct,
)


def deidentify(**overrides: object) -> Dataset:
    return Deidentifier(KEY).deidentify_dataset(make_ct(**overrides))


def test_x_removes_attributes() -> None:
    ds = deidentify()
    for keyword in ("InstitutionAddress", "PatientAddress", "OtherPatientIDsSequence", "IssuerOfPatientID"):
        assert keyword not in ds, keyword


def test_z_leaves_an_empty_value() -> None:
    ds = deidentify()
    assert "PatientBirthDate" in ds
    assert ds.PatientBirthDate == ""
    assert ds.ReferringPhysicianName == ""


def test_d_gives_a_non_empty_dummy_consistent_with_the_vr() -> None:
    observer = Dataset()
    observer.VerifyingObserverName = "Okonkwo^Adaeze"
    observer.VerifyingOrganization = "Lakeside General Hospital"
    observer.VerificationDateTime = "20230314110000"
    ds = deidentify(VerifyingObserverSequence=Sequence([observer]), ContentLabel="LESION_1")
    item = ds.VerifyingObserverSequence[0]
    assert str(item.VerifyingObserverName) and "Okonkwo" not in str(item.VerifyingObserverName)
    assert item.VerifyingOrganization and "Lakeside" not in item.VerifyingOrganization
    assert item.VerificationDateTime and not item.VerificationDateTime.startswith("20230314")


def test_u_replaces_uids_consistently() -> None:
    deid = Deidentifier(KEY)
    ds = deid.deidentify_dataset(make_ct())
    assert ds.SOPInstanceUID == deid.remap_uid(ORIGINAL_SOP_UID) != ORIGINAL_SOP_UID
    assert ds.StudyInstanceUID == deid.remap_uid(ORIGINAL_STUDY_UID)
    assert ds.SeriesInstanceUID == deid.remap_uid(ORIGINAL_SERIES_UID)
    assert ds.FrameOfReferenceUID == deid.remap_uid(ORIGINAL_FOR_UID)


def test_k_keeps_patient_characteristics_under_the_default_option() -> None:
    ds = deidentify()
    assert ds.PatientSex == "M"
    assert ds.PatientWeight == 81.5
    assert ds.PatientSize == 1.82


def test_c_cleans_descriptors_instead_of_removing_them() -> None:
    ds = deidentify()
    assert ds.StudyDescription.startswith("CT CHEST")
    assert "Fairweather" not in ds.StudyDescription and PATIENT_ID not in ds.StudyDescription
    assert "2023" not in ds.StudyDescription


def test_patient_id_name_accession_and_study_id_become_keyed_pseudonyms() -> None:
    ds = deidentify()
    assert ds.PatientID.startswith("PL-") and PATIENT_ID not in ds.PatientID
    assert str(ds.PatientName) == ds.PatientID + "^"
    assert ds.AccessionNumber and ds.AccessionNumber != ACCESSION and len(ds.AccessionNumber) <= 16
    assert ds.StudyID and ds.StudyID != "S4471" and len(ds.StudyID) <= 16
    assert ds.AccessionNumber != ds.StudyID


def test_unlisted_standard_attributes_are_kept() -> None:
    ds = deidentify(BodyPartExamined="CHEST", KVP="120")
    assert ds.BodyPartExamined == "CHEST"
    assert ds.KVP == 120
    assert ds.Manufacturer == "ACME Medical"


def test_unlisted_uids_dates_and_person_names_are_still_handled() -> None:
    deid = Deidentifier(KEY)
    # Attributes Table E.1-1 does not list: their UIDs, dates and names are still not safe.
    ds = make_ct()
    ds.add_new(0x00083010, "UI", "1.2.826.0.1.3680043.10.1001.555")  # Irradiation Event UID
    ds.add_new(0x00143076, "DA", "20230101")  # Date of Gain Calibration
    ds.add_new(0x00142006, "PN", "Okonkwo^Adaeze")  # Evaluator Name
    out = deid.deidentify_dataset(ds)
    assert out[0x00083010].value == deid.remap_uid("1.2.826.0.1.3680043.10.1001.555")
    assert out[0x00143076].value and out[0x00143076].value != "20230101"
    assert out[0x00142006].value and "Okonkwo" not in str(out[0x00142006].value)


def test_class_and_well_known_uids_are_not_remapped() -> None:
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Chest"
    item.CodingSchemeUID = "2.16.840.1.113883.6.96"
    ds = deidentify(AnatomicRegionSequence=Sequence([item]))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.AnatomicRegionSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"


def test_overlay_groups_are_removed_entirely() -> None:
    ds = deidentify()
    assert not [elem for elem in ds if 0x6000 <= elem.tag.group <= 0x601E]


def test_private_elements_are_removed() -> None:
    ds = deidentify()
    assert not [elem for elem in ds.iterall() if elem.tag.is_private]


def test_deidentification_is_recorded() -> None:
    ds = deidentify()
    assert ds.PatientIdentityRemoved == "YES"
    assert "PS3.15 E.1-1 2024b" in ds.DeidentificationMethod
    assert "pacslabel 0.1.0" in ds.DeidentificationMethod
    codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113105", "DCM"), ("113107", "DCM"), ("113108", "DCM")]
    assert ds.DeidentificationMethodCodeSequence[0].CodeMeaning == "Basic Application Confidentiality Profile"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "BurnedInAnnotation" not in ds  # left to the pixel step


def test_burned_in_annotation_is_left_as_it_is() -> None:
    assert deidentify(BurnedInAnnotation="YES").BurnedInAnnotation == "YES"


def test_file_meta_is_rebuilt_with_the_new_instance_uid() -> None:
    deid = Deidentifier(KEY)
    ds = deid.deidentify_dataset(make_ct())
    assert ds.file_meta.MediaStorageSOPInstanceUID == deid.remap_uid(ORIGINAL_SOP_UID)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in ds.file_meta
