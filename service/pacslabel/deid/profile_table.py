"""PS3.15 Table E.1-1 (edition 2024b) as data, and the per-option action map built from it.

The JSON is the innolitics/dicom-standard extraction of the table (one object per row, option keys absent
when the cell is empty). It ships inside the package so an installed pacslabel carries the edition it
claims in De-identification Method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pacslabel.deid.options import DeidOptions

EDITION = "2024b"
TABLE_FILE = "ps3.15-e1-1-2024b.json"

# Action codes as stored in the action map. Option "C" cells become a C:<what> code so the walker knows
# which kind of cleaning the row asks for.
KEEP = "K"
REMOVE = "X"
EMPTY = "Z"
DUMMY = "D"
REPLACE_UID = "U"
CLEAN_DATES = "C:dates"
CLEAN_DESCRIPTOR = "C:desc"
CLEAN_PATIENT_CHARACTERISTIC = "C:patient"
CLEAN_DEVICE = "C:device"
CLEAN_GRAPHICS = "C:graphics"
CLEAN_STRUCTURED = "C:struct"
CLEAN_PRIVATE = "C:private"
COMPOUND_CODES = frozenset({"Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})
SIMPLE_CODES = frozenset({KEEP, REMOVE, EMPTY, DUMMY, REPLACE_UID})

# Option columns in the order they are applied: later columns win where two apply to one row, so
# cleaning (removes more) overrides retaining, and date handling overrides device/UID retention.
_RETAIN_COLUMNS = ("rtnDevIdOpt", "rtnInstIdOpt", "rtnPatCharsOpt", "rtnUIDsOpt", "rtnSafePrivOpt")
_DATE_COLUMNS = ("rtnLongFullDatesOpt", "rtnLongModifDatesOpt")
_CLEAN_COLUMNS = ("cleanDescOpt", "cleanGraphOpt", "cleanStructContOpt")
_C_MEANING = {
    "rtnDevIdOpt": CLEAN_DEVICE,
    "rtnPatCharsOpt": CLEAN_PATIENT_CHARACTERISTIC,
    "rtnSafePrivOpt": CLEAN_PRIVATE,
    "rtnLongModifDatesOpt": CLEAN_DATES,
    "cleanDescOpt": CLEAN_DESCRIPTOR,
    "cleanGraphOpt": CLEAN_GRAPHICS,
    "cleanStructContOpt": CLEAN_STRUCTURED,
}

REPEATING_GROUPS_CURVE = tuple(range(0x5000, 0x5020, 2))
REPEATING_GROUPS_OVERLAY = tuple(range(0x6000, 0x6020, 2))
PRIVATE_ROW_ID = "ggggeeee-where-gggg-is-odd"


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1."""

    row_id: str
    name: str
    basic: str
    options: dict[str, str]


@dataclass(frozen=True)
class ActionMap:
    """Everything the walker needs for one option set.

    ``by_tag`` may still hold compound codes; they are resolved per SOP class (see ``iod_types``).
    ``by_group`` covers the 50xx/60xx repeating groups (whole groups are removed: an overlay without its
    data is not a valid overlay, and overlay bitmaps cannot be cleaned here).
    """

    by_tag: dict[int, str]
    by_group: dict[int, str]
    private: str


@lru_cache(maxsize=1)
def load_rows() -> tuple[ProfileRow, ...]:
    text = resources.files("pacslabel.deid").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    rows = []
    for raw in json.loads(text):
        options = {k: v for k, v in raw.items() if k.endswith("Opt")}
        rows.append(ProfileRow(row_id=raw["id"], name=raw["name"], basic=raw["basicProfile"], options=options))
    return tuple(rows)


# DeidOptions field -> the Table E.1-1 column it switches on.
_OPTION_COLUMNS = {
    "retain_device_identity": "rtnDevIdOpt",
    "retain_institution_identity": "rtnInstIdOpt",
    "retain_patient_characteristics": "rtnPatCharsOpt",
    "retain_uids": "rtnUIDsOpt",
    "retain_safe_private": "rtnSafePrivOpt",
    "clean_descriptors": "cleanDescOpt",
    "clean_graphics": "cleanGraphOpt",
    "clean_structured_content": "cleanStructContOpt",
}


def _enabled_columns(options: DeidOptions) -> set[str]:
    enabled = {column for field, column in _OPTION_COLUMNS.items() if getattr(options, field)}
    # Full dates and modified dates act on the same rows; full dates win when both are asked for.
    if options.retain_longitudinal_full_dates:
        enabled.add("rtnLongFullDatesOpt")
    elif options.retain_longitudinal_modified_dates:
        enabled.add("rtnLongModifDatesOpt")
    return enabled


def row_action(row: ProfileRow, enabled: set[str]) -> str:
    """The action for one row under the enabled option columns (an option overrides Basic for its rows)."""
    action = row.basic
    has_date_column = any(col in row.options for col in _DATE_COLUMNS)
    date_option_on = any(col in enabled for col in _DATE_COLUMNS)
    for column in _RETAIN_COLUMNS + _DATE_COLUMNS + _CLEAN_COLUMNS:
        cell = row.options.get(column)
        if cell is None or column not in enabled:
            continue
        if has_date_column and not date_option_on and column in _RETAIN_COLUMNS:
            # A date row is governed by the date options: Retain Device Identity must not keep a
            # calibration date in full when no date option is on.
            continue
        action = _C_MEANING.get(column, "C") if cell == "C" else cell
    return action


@lru_cache(maxsize=64)
def build_action_map(options: DeidOptions) -> ActionMap:
    enabled = _enabled_columns(options)
    by_tag: dict[int, str] = {}
    by_group: dict[int, str] = {}
    private = REMOVE
    for row in load_rows():
        action = row_action(row, enabled)
        rid = row.row_id
        if rid == PRIVATE_ROW_ID:
            private = action
        elif rid.startswith("50xx"):
            for group in REPEATING_GROUPS_CURVE:
                by_group[group] = REMOVE
        elif rid.startswith("60xx"):
            element = int(rid[4:], 16)
            for group in REPEATING_GROUPS_OVERLAY:
                by_group[group] = REMOVE
                by_tag[(group << 16) | element] = REMOVE
        else:
            by_tag[int(rid, 16)] = action
    return ActionMap(by_tag=by_tag, by_group=by_group, private=private)


@lru_cache(maxsize=1)
def basic_dummy_tags() -> frozenset[int]:
    """Tags whose Basic Profile code is D: a cleaned value must not end up empty."""
    return frozenset(int(r.row_id, 16) for r in load_rows() if r.basic == DUMMY and "x" not in r.row_id)
