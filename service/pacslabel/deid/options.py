"""Per-project de-identification options (PS3.15 E.3) and their CID 7050 codes."""

from __future__ import annotations

from dataclasses import dataclass, field

# CID 7050 code values (scheme DCM); meanings come from pydicom's codedict when recorded.
BASIC_PROFILE = "113100"
CLEAN_PIXEL_DATA = "113101"
CLEAN_RECOGNIZABLE_VISUAL_FEATURES = "113102"
CLEAN_GRAPHICS = "113103"
CLEAN_STRUCTURED_CONTENT = "113104"
CLEAN_DESCRIPTORS = "113105"
RETAIN_LONGITUDINAL_FULL_DATES = "113106"
RETAIN_LONGITUDINAL_MODIFIED_DATES = "113107"
RETAIN_PATIENT_CHARACTERISTICS = "113108"
RETAIN_DEVICE_IDENTITY = "113109"
RETAIN_UIDS = "113110"
RETAIN_SAFE_PRIVATE = "113111"
RETAIN_INSTITUTION_IDENTITY = "113112"


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 options a project applies on top of the Basic Profile.

    The defaults are the pacslabel default for annotation projects: Basic Profile + Retain Longitudinal
    Temporal Information with Modified Dates + Retain Patient Characteristics + Clean Descriptors.
    If both date options are set, Full Dates wins (it is the explicit, more retaining choice) and only
    113106 is recorded.
    """

    retain_longitudinal_modified_dates: bool = True
    retain_longitudinal_full_dates: bool = False
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    clean_descriptors: bool = True
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_graphics: bool = False
    clean_structured_content: bool = False
    # (private creator, element offset 0x00-0xFF) pairs kept when retain_safe_private is set.
    safe_private_tags: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for creator, offset in self.safe_private_tags:
            if not isinstance(creator, str) or not isinstance(offset, int) or not 0 <= offset <= 0xFF:
                raise ValueError("safe_private_tags must hold (private creator, element offset 0..255) pairs.")

    @property
    def shifts_dates(self) -> bool:
        return self.retain_longitudinal_modified_dates and not self.retain_longitudinal_full_dates

    def method_codes(self) -> list[str]:
        """CID 7050 codes of the profile and options applied by the header engine, in code order."""
        codes = [BASIC_PROFILE]
        if self.clean_graphics:
            codes.append(CLEAN_GRAPHICS)
        if self.clean_structured_content:
            codes.append(CLEAN_STRUCTURED_CONTENT)
        if self.clean_descriptors:
            codes.append(CLEAN_DESCRIPTORS)
        if self.retain_longitudinal_full_dates:
            codes.append(RETAIN_LONGITUDINAL_FULL_DATES)
        elif self.retain_longitudinal_modified_dates:
            codes.append(RETAIN_LONGITUDINAL_MODIFIED_DATES)
        if self.retain_patient_characteristics:
            codes.append(RETAIN_PATIENT_CHARACTERISTICS)
        if self.retain_device_identity:
            codes.append(RETAIN_DEVICE_IDENTITY)
        if self.retain_uids:
            codes.append(RETAIN_UIDS)
        if self.retain_safe_private:
            codes.append(RETAIN_SAFE_PRIVATE)
        if self.retain_institution_identity:
            codes.append(RETAIN_INSTITUTION_IDENTITY)
        return codes
