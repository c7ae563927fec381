"""A compact model of PS3.3 attribute types, just enough to resolve Table E.1-1 compound codes.

Compound codes (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) say "remove, unless the IOD needs the attribute present".
We list, per IOD family we handle (CT, MR, SC, SEG, SR, plus the generic patient/study/series/equipment
modules), the Type 1/2 attributes among the compound-coded rows; anything not listed is treated as
Type 3 (removed). A conditional type (1C/2C) is treated as required when the attribute is present in
the source, because the sender judged the condition to hold.
"""

from __future__ import annotations

from functools import lru_cache

from pacslabel.deid.profile_table import (
    DUMMY,
    EMPTY,
    REMOVE,
    REPLACE_UID,
)

# Tags used below (keywords in comments keep this greppable without importing the dictionary).
PATIENT_ID = 0x00100020
PATIENT_SEX_NEUTERED = 0x00102203
CONTENT_DATE = 0x00080023
CONTENT_TIME = 0x00080033
CONTRAST_BOLUS_AGENT = 0x00180010
DEVICE_SERIAL_NUMBER = 0x00181000
ACQUISITION_DATETIME = 0x0008002A
CONTENT_CREATOR_NAME = 0x00700084
REFERENCED_PPS_SEQUENCE = 0x00081111
SOURCE_IMAGE_SEQUENCE = 0x00082112
DERIVATION_IMAGE_SEQUENCE = 0x00089124

# Patient, General Study/Series/Equipment, General Image, Contrast/Bolus: the modules every image IOD has.
_GENERIC: dict[int, str] = {
    PATIENT_ID: "2",
    PATIENT_SEX_NEUTERED: "2C",
    CONTENT_DATE: "2C",
    CONTENT_TIME: "2C",
    CONTRAST_BOLUS_AGENT: "2",
}
# Enhanced General Equipment (Type 1 device fields) and Multi-frame Functional Groups (Content Date/Time 1).
_ENHANCED: dict[int, str] = {
    **_GENERIC,
    DEVICE_SERIAL_NUMBER: "1",
    CONTENT_DATE: "1",
    CONTENT_TIME: "1",
    ACQUISITION_DATETIME: "1C",
}
_SEGMENTATION: dict[int, str] = {**_ENHANCED, CONTENT_CREATOR_NAME: "2"}
_SEGMENTATION.pop(ACQUISITION_DATETIME)
# SR Document General + SR Document Series / Key Object Document Series (Referenced PPS Sequence Type 2).
_STRUCTURED_REPORT: dict[int, str] = {
    PATIENT_ID: "2",
    PATIENT_SEX_NEUTERED: "2C",
    CONTENT_DATE: "1",
    CONTENT_TIME: "1",
    REFERENCED_PPS_SEQUENCE: "2",
}

_CT = "1.2.840.10008.5.1.4.1.1.2"
_SOP_CLASS_FAMILY: dict[str, dict[int, str]] = {
    _CT: _GENERIC,  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1": _ENHANCED,  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2": _ENHANCED,  # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4": _GENERIC,  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1": _ENHANCED,  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3": _ENHANCED,  # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.4.4": _ENHANCED,  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.7": _GENERIC,  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1": _GENERIC,  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2": _GENERIC,  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3": _GENERIC,  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4": _GENERIC,  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.66.4": _SEGMENTATION,  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7": _SEGMENTATION,  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11": _STRUCTURED_REPORT,  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22": _STRUCTURED_REPORT,  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33": _STRUCTURED_REPORT,  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34": _STRUCTURED_REPORT,  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.59": _STRUCTURED_REPORT,  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.88.67": _STRUCTURED_REPORT,  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.68": _STRUCTURED_REPORT,  # Radiopharmaceutical Radiation Dose SR
}

# Types of attributes inside sequence items, keyed by (sequence tag, attribute tag).
_NESTED: dict[tuple[int, int], str] = {
    # Image SOP Instance Reference in Derivation Image Sequence (SEG, enhanced images): Type 1.
    (DERIVATION_IMAGE_SEQUENCE, SOURCE_IMAGE_SEQUENCE): "1",
}


def iod_type(sop_class_uid: str, tag: int) -> str:
    """PS3.3 type of a top-level attribute in the IOD of a SOP class ("3" when not modelled)."""
    return _SOP_CLASS_FAMILY.get(sop_class_uid, _GENERIC).get(tag, "3")


def nested_type(sequence_tag: int, tag: int) -> str | None:
    """PS3.3 type of an attribute inside items of a sequence, when known."""
    return _NESTED.get((sequence_tag, tag))


def resolve_compound(code: str, attribute_type: str | None, *, nested: bool) -> str:
    """Pick the least-removing simple code that keeps a Type 1/2 attribute present.

    Type 1 → dummy (D) or kept with UIDs replaced (U); Type 2 → empty (Z); otherwise remove (X).
    Inside sequences with no known type, X/Z/U* keeps the references (with UIDs replaced) because
    removing them would break SEG/SR referential integrity, and the replaced UIDs carry no PHI.
    """
    required = attribute_type[0] if attribute_type else "3"
    if code == "X/Z/U*":
        if required in "12" or nested:
            return REPLACE_UID
        return REMOVE
    if required == "1":
        return DUMMY
    if required == "2":
        return DUMMY if code == "X/D" else EMPTY
    return EMPTY if code == "Z/D" else REMOVE


@lru_cache(maxsize=256)
def resolved_top_level(sop_class_uid: str, compound: tuple[tuple[int, str], ...]) -> dict[int, str]:
    """Resolve every compound-coded tag of an action map for one SOP class."""
    return {tag: resolve_compound(code, iod_type(sop_class_uid, tag), nested=False) for tag, code in compound}
