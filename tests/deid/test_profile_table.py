"""Table E.1-1 as data: loading, repeating groups, private row, option overrides."""

from __future__ import annotations

from collections import Counter

from pacslabel.deid import DeidOptions
from pacslabel.deid import profile_table as pt

STUDY_DATE = 0x00080020
PATIENT_SEX = 0x00100040
PATIENT_AGE = 0x00101010
STUDY_DESCRIPTION = 0x00081030
STATION_NAME = 0x00081010
INSTITUTION_NAME = 0x00080080
SOP_INSTANCE_UID = 0x00080018
TIME_OF_LAST_CALIBRATION = 0x0018700E
STATION_AE_TITLE = 0x00081010


def test_packaged_table_has_all_621_rows_with_2024b_counts() -> None:
    rows = pt.load_rows()
    assert len(rows) == 621
    counts = Counter(row.basic for row in rows)
    assert counts == {"X": 384, "D": 92, "U": 54, "Z": 42, "X/D": 22, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2}


def test_overlay_and_curve_repeating_groups_expand_to_all_16_even_groups() -> None:
    actions = pt.build_action_map(DeidOptions())
    assert [g for g in range(0x6000, 0x6100) if g in actions.by_group] == list(range(0x6000, 0x6020, 2))
    assert [g for g in range(0x5000, 0x5100) if g in actions.by_group] == list(range(0x5000, 0x5020, 2))
    assert actions.by_tag[0x601E3000] == pt.REMOVE
    assert 0x60013000 not in actions.by_tag  # odd groups are private, not overlays


def test_private_row_is_remove_by_default_and_clean_under_retain_safe_private() -> None:
    assert pt.build_action_map(DeidOptions()).private == pt.REMOVE
    assert pt.build_action_map(DeidOptions(retain_safe_private=True)).private == pt.CLEAN_PRIVATE


def test_basic_profile_only_uses_basic_column() -> None:
    basic = DeidOptions(
        retain_longitudinal_modified_dates=False, retain_patient_characteristics=False, clean_descriptors=False
    )
    actions = pt.build_action_map(basic).by_tag
    assert actions[STUDY_DATE] == pt.EMPTY
    assert actions[PATIENT_SEX] == pt.EMPTY
    assert actions[PATIENT_AGE] == pt.REMOVE
    assert actions[STUDY_DESCRIPTION] == pt.REMOVE
    assert actions[SOP_INSTANCE_UID] == pt.REPLACE_UID
    assert actions[INSTITUTION_NAME] == "X/Z/D"  # compound: resolved per SOP class later


def test_option_columns_override_basic_for_their_rows() -> None:
    defaults = pt.build_action_map(DeidOptions()).by_tag
    assert defaults[STUDY_DATE] == pt.CLEAN_DATES
    assert defaults[PATIENT_SEX] == pt.KEEP
    assert defaults[STUDY_DESCRIPTION] == pt.CLEAN_DESCRIPTOR
    full = pt.build_action_map(DeidOptions(retain_longitudinal_full_dates=True)).by_tag
    assert full[STUDY_DATE] == pt.KEEP
    device = pt.build_action_map(DeidOptions(retain_device_identity=True)).by_tag
    assert device[STATION_NAME] == pt.KEEP
    assert pt.build_action_map(DeidOptions(retain_uids=True)).by_tag[SOP_INSTANCE_UID] == pt.KEEP
    assert pt.build_action_map(DeidOptions(retain_institution_identity=True)).by_tag[INSTITUTION_NAME] == pt.KEEP


def test_device_retention_does_not_keep_a_calibration_date_when_no_date_option_is_on() -> None:
    no_dates = DeidOptions(retain_longitudinal_modified_dates=False, retain_device_identity=True)
    assert pt.build_action_map(no_dates).by_tag[TIME_OF_LAST_CALIBRATION] == "X/D"
    with_dates = DeidOptions(retain_device_identity=True)
    assert pt.build_action_map(with_dates).by_tag[TIME_OF_LAST_CALIBRATION] == pt.CLEAN_DATES


def test_method_codes_follow_the_options() -> None:
    assert DeidOptions().method_codes() == ["113100", "113105", "113107", "113108"]
    everything = DeidOptions(
        retain_longitudinal_modified_dates=False,
        retain_longitudinal_full_dates=True,
        retain_device_identity=True,
        retain_institution_identity=True,
        retain_uids=True,
        retain_safe_private=True,
        clean_graphics=True,
        clean_structured_content=True,
    )
    assert everything.method_codes() == [
        "113100",
        "113103",
        "113104",
        "113105",
        "113106",
        "113108",
        "113109",
        "113110",
        "113111",
        "113112",
    ]
