"""The de-identified result handed to the worker: bytes, new UIDs and catalog fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacslabel.deid.element_values import ascii_values

# Read from the de-identified dataset only, so nothing here can hold an original value.
CATALOG_KEYWORDS = (
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StudyDescription",
    "SeriesDescription",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "AccessionNumber",
    "StudyID",
    "PatientName",
    "PatientSex",
    "PatientAge",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SeriesNumber",
    "InstanceNumber",
    "SliceThickness",
    "FrameOfReferenceUID",
    "ImageType",
    "BurnedInAnnotation",
)

_CATALOG_TAGS = tuple(
    (keyword, tag, dictionary_VR(tag)) for keyword in CATALOG_KEYWORDS if (tag := tag_for_keyword(keyword)) is not None
)

CatalogValue = str | int | float | None


@dataclass
class DeidentifiedInstance:
    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    original_patient_key: str
    attributes: dict[str, CatalogValue] = field(default_factory=dict)


def _plain(value: object) -> CatalogValue:
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)  # multi-valued: DICOM's own separator
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)  # IS is an int subclass
    if isinstance(value, float):
        return float(value)  # DS is a float subclass
    return str(value)  # PersonName, UID...


def catalog_attributes(ds: Dataset) -> dict[str, CatalogValue]:
    attributes: dict[str, CatalogValue] = {}
    for keyword, tag, vr in _CATALOG_TAGS:
        if tag not in ds:
            continue
        if vr in ("CS", "DA", "TM", "AS"):  # ASCII: read the raw bytes, skip pydicom's conversion
            values = ascii_values(ds, tag)
            attributes[keyword] = "\\".join(values) if values else None
        else:
            attributes[keyword] = _plain(ds[tag].value)
    return attributes
