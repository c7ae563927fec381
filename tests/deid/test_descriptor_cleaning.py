"""Clean Descriptors: names, identifiers and dates found in free text are removed."""

from __future__ import annotations

import pytest

from pacslabel.deid import Deidentifier
from pacslabel.deid.descriptor_cleaning import DescriptorCleaner
from tests.deid.builders import KEY, make_ct

TERMS = ("Fairweather", "Jonathan", "MRN4471882", "ACC20230314", "Lakeside General Hospital", "Lakeside", "Li")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT CHEST for Fairweather MRN4471882", "CT CHEST for"),
        ("jonathan FAIRWEATHER follow-up", "follow-up"),
        ("Accession ACC20230314 at Lakeside General Hospital", "Accession at"),
        ("Liver Li protocol", "Liver protocol"),  # short names only as whole words
        ("CT 2023-03-14", "CT"),
        ("CT 20230314", "CT"),
        ("CT 14/03/2023", "CT"),
        ("CT 03/14/23", "CT"),
        ("CT 14.03.2023", "CT"),
        ("CT 14 Mar 2023", "CT"),
        ("CT March 14, 2023", "CT"),
        ("CT_20230314_AX", "CT_ _AX"),
        ("call 555-123-4567", "call"),
        ("Axial 2.0mm Br40", "Axial 2.0mm Br40"),  # nothing identifying: unchanged
        ("CT ABDOMEN (Fairweather, MRN4471882)", "CT ABDOMEN"),
    ],
)
def test_cleaner_removes_identifying_tokens(text: str, expected: str) -> None:
    assert DescriptorCleaner(TERMS).clean(text) == expected


def test_terms_come_from_the_header_of_the_instance() -> None:
    ds = Deidentifier(KEY).deidentify_dataset(make_ct())
    assert ds.StudyDescription == "CT CHEST for"
    assert ds.SeriesDescription == "Axial 1mm"
    assert ds.ProtocolName == "Chest_Routine"
    assert "Okonkwo" not in ds.ImageComments and "2023" not in ds.ImageComments and "555" not in ds.ImageComments


def test_descriptions_are_removed_without_clean_descriptors() -> None:
    from pacslabel.deid import DeidOptions

    ds = Deidentifier(KEY, DeidOptions(clean_descriptors=False)).deidentify_dataset(make_ct())
    assert "StudyDescription" not in ds and "SeriesDescription" not in ds and "ImageComments" not in ds
