"""Keyed 2.25 UIDs: format, stability across runs and processes, key separation."""

from __future__ import annotations

import re
import subprocess
import sys

from pacslabel.deid import Deidentifier
from pacslabel.deid.uid_remapping import is_well_known_uid
from tests.deid.builders import KEY, ORIGINAL_SOP_UID, make_ct

UID_25 = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_remapped_uids_are_2_25_form_without_leading_zeros_and_at_most_64_chars() -> None:
    deid = Deidentifier(KEY)
    for n in range(500):
        new = deid.remap_uid(f"1.2.826.0.1.3680043.10.1001.{n}")
        assert UID_25.match(new), new
        assert len(new) <= 64
        assert len(new.split(".")[2]) <= 39


def test_same_key_gives_the_same_uids_in_another_process() -> None:
    here = Deidentifier(KEY).remap_uid(ORIGINAL_SOP_UID)
    code = f"from pacslabel.deid import Deidentifier;print(Deidentifier({KEY!r}).remap_uid({ORIGINAL_SOP_UID!r}))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert here == there


def test_another_key_gives_other_uids_and_pseudonyms() -> None:
    one = Deidentifier(KEY).deidentify_dataset(make_ct())
    again = Deidentifier(KEY).deidentify_dataset(make_ct())
    other = Deidentifier(b"another-project-key-0123456789ab").deidentify_dataset(make_ct())
    assert (one.SOPInstanceUID, one.PatientID, one.StudyDate) == (
        again.SOPInstanceUID,
        again.PatientID,
        again.StudyDate,
    )
    assert one.SOPInstanceUID != other.SOPInstanceUID
    assert one.PatientID != other.PatientID
    assert one.AccessionNumber != other.AccessionNumber


def test_well_known_uids_are_recognised() -> None:
    assert is_well_known_uid("1.2.840.10008.5.1.4.1.1.2")
    assert is_well_known_uid("1.2.840.10008.1.2.1")
    assert not is_well_known_uid(ORIGINAL_SOP_UID)
    assert Deidentifier(KEY).remap_uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"


def test_padding_does_not_change_the_mapping() -> None:
    deid = Deidentifier(KEY)
    assert deid.remap_uid(ORIGINAL_SOP_UID + "\x00") == deid.remap_uid(ORIGINAL_SOP_UID)


def test_short_keys_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="16 bytes"):
        Deidentifier(b"short")
