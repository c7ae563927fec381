"""Nested sequences: every level is walked, references stay consistent."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from pacslabel.deid import Deidentifier
from tests.deid.builders import KEY, ORIGINAL_SERIES_UID, ORIGINAL_SOP_UID, ORIGINAL_STUDY_UID, make_ct


def three_levels() -> Dataset:
    innermost = Dataset()
    innermost.ReferencedSOPClassUID = CTImageStorage
    innermost.ReferencedSOPInstanceUID = ORIGINAL_SOP_UID
    innermost.add_new(0x00431001, "LO", "private at level 3")
    innermost.add_new(0x00430010, "LO", "GEMS_PARM_01")
    innermost.PatientBirthDate = "19760412"
    innermost.PerformingPhysicianName = "Okonkwo^Adaeze"
    middle = Dataset()
    middle.SeriesInstanceUID = ORIGINAL_SERIES_UID
    middle.ReferencedInstanceSequence = Sequence([innermost])
    middle.add_new(0x00431002, "LO", "private at level 2")
    top = Dataset()
    top.StudyInstanceUID = ORIGINAL_STUDY_UID
    top.ReferencedSeriesSequence = Sequence([middle])
    return top


def test_three_levels_deep_uids_are_remapped_consistently_and_phi_removed() -> None:
    deid = Deidentifier(KEY)
    ds = deid.deidentify_dataset(make_ct(StudiesContainingOtherReferencedInstancesSequence=Sequence([three_levels()])))
    top = ds.StudiesContainingOtherReferencedInstancesSequence[0]
    middle = top.ReferencedSeriesSequence[0]
    innermost = middle.ReferencedInstanceSequence[0]
    assert top.StudyInstanceUID == ds.StudyInstanceUID  # same function at every level
    assert middle.SeriesInstanceUID == ds.SeriesInstanceUID
    assert innermost.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert innermost.ReferencedSOPClassUID == CTImageStorage
    assert innermost.PatientBirthDate == ""
    assert "PerformingPhysicianName" not in innermost
    assert not [elem for elem in ds.iterall() if elem.tag.is_private]


def test_request_attributes_are_cleaned_inside_the_sequence() -> None:
    item = Dataset()
    item.RequestedProcedureDescription = "CT chest for Fairweather"
    item.AccessionNumber = "ACC20230314"
    item.StudyInstanceUID = ORIGINAL_STUDY_UID
    deid = Deidentifier(KEY)
    ds = deid.deidentify_dataset(make_ct(RequestAttributesSequence=Sequence([item])))
    kept = ds.RequestAttributesSequence[0]
    assert kept.RequestedProcedureDescription == "CT chest for"
    assert kept.AccessionNumber == ds.AccessionNumber  # same pseudonym as the top level
    assert kept.StudyInstanceUID == ds.StudyInstanceUID
