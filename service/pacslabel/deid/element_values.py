"""Reading and writing element values without pydicom's per-element conversion.

Most replacements are ASCII (UIDs, shifted dates, pseudonyms, dummies). Building them as raw elements
means the writer copies bytes instead of re-encoding, and reading ASCII VRs straight from the raw bytes
skips pydicom's value conversion — together a large share of the engine's time.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

# VRs whose values are in the default repertoire whatever the Specific Character Set says.
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_STRIP = " \x00"
_STRIP_BYTES = b" \x00"


def ascii_values(ds: Dataset, tag: int) -> list[str]:
    """The values of an ASCII-VR element as strings (raw or already converted), padding stripped."""
    elem = ds.get_item(tag)
    if elem is None:
        return []
    value = elem.value
    if isinstance(value, bytes):  # still raw
        text = value.decode("latin-1").strip(_STRIP)
        return [part.strip(_STRIP) for part in text.split("\\")] if text else []
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v).strip(_STRIP) for v in value]
    return [str(value).strip(_STRIP)]


def is_empty(ds: Dataset, tag: int) -> bool:
    elem = ds.get_item(tag)
    if elem is None:
        return True
    value = elem.value
    if isinstance(value, bytes):
        return not value.strip(_STRIP_BYTES)
    return value is None or value == "" or (isinstance(value, MultiValue | list | Sequence) and len(value) == 0)


def set_text(ds: Dataset, tag: int, vr: str, values: list[str] | str) -> None:
    """Set an ASCII value (or values) as a raw element: written byte for byte."""
    vr = vr[:2]  # an ambiguous dictionary VR ("US or SS") only reaches here for implicit VR data
    text = values if isinstance(values, str) else "\\".join(values)
    data = text.encode("ascii")
    if len(data) & 1:
        data += b"\x00" if vr == "UI" else b" "
    ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)


def set_empty(ds: Dataset, tag: int, vr: str) -> None:
    """Zero-length value (Z); a sequence becomes a sequence without items."""
    if vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", Sequence())
    else:
        ds[tag] = RawDataElement(tag, vr[:2], 0, b"", 0, False, True)


def set_value(ds: Dataset, tag: int, vr: str, value: Any) -> None:
    """Set a replacement value, as raw bytes when it is ASCII text."""
    if isinstance(value, str) and value.isascii():
        set_text(ds, tag, vr, value)
    else:
        ds[tag] = DataElement(tag, vr[:2], value)
