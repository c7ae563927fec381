"""VR-consistent replacement values: dummies for D, empties for Z, and age brackets."""

from __future__ import annotations

from typing import Any

from pydicom.tag import BaseTag

DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT + "^",  # family-name form; a bare word reads as the retired ACR-NEMA name form
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "TM": "000000",
    "UC": DUMMY_TEXT,
    "UR": "urn:x-anonymized",
    "UT": DUMMY_TEXT,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
BRACKET_YEARS = 5
OLDEST_BRACKET = 90  # HIPAA Safe Harbor: ages over 89 are aggregated


def dummy_value(vr: str) -> Any:
    """A non-empty value valid for the VR (D action)."""
    if vr in _BYTES_VRS:
        return b"\x00" * 8  # a multiple of every OB/OD/OF/OL/OV/OW word size
    if vr == "AT":
        return BaseTag(0)
    # Ambiguous VRs from the dictionary ("US or SS", "OB or OW") take their first alternative.
    return _DUMMY_BY_VR.get(vr[:2], DUMMY_TEXT)


def age_bracket(age: str) -> str | None:
    """A Patient's Age reduced to the lower bound of its 5-year bracket; 90 and over become ``090Y``.

    ``"047Y"`` → ``"045Y"``, ``"006M"`` → ``"000Y"``, ``"093Y"`` → ``"090Y"``. Unparseable → ``None``.
    """
    text = age.strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in "DWMY":
        return None
    number = int(text[:3])
    per_year = {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[text[3]]
    years = int(number / per_year)
    bracket = min(OLDEST_BRACKET, years - years % BRACKET_YEARS)
    return f"{bracket:03d}Y"
