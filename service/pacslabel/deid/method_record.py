"""What every de-identified instance records about how it was de-identified (PS3.15 E.1.1, notes §5)."""

from __future__ import annotations

from functools import lru_cache

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag

import pacslabel
from pacslabel.deid.element_values import set_text
from pacslabel.deid.options import DeidOptions
from pacslabel.deid.profile_table import EDITION

_CID_7050 = {code.value: code for code in (getattr(codes.cid7050, name) for name in codes.cid7050.dir())}

METHOD_TEXT = f"PS3.15 E.1-1 {EDITION}; pacslabel {pacslabel.__version__}"
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = 0x00120064
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303


def _code_item(code_value: str) -> Dataset:
    code = _CID_7050.get(code_value)
    if code is None:
        raise ValueError(f"{code_value!r} is not a CID 7050 de-identification method code.")
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def temporal_information_state(options: DeidOptions) -> str:
    if options.retain_longitudinal_full_dates:
        return "UNMODIFIED"
    if options.retain_longitudinal_modified_dates:
        return "MODIFIED"
    return "REMOVED"


def record_deidentification(ds: Dataset, options: DeidOptions) -> None:
    """Set Patient Identity Removed, the method text and codes, and the temporal information state.

    Burned In Annotation is left as it is: only the pixel step may set it to NO (and add 113101 with
    :func:`add_deidentification_method_code`).
    """
    set_text(ds, PATIENT_IDENTITY_REMOVED, "CS", "YES")
    set_text(ds, DEIDENTIFICATION_METHOD, "LO", METHOD_TEXT)
    set_text(ds, LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS", temporal_information_state(options))
    implicit_vr, little_endian = ds.original_encoding
    codes = tuple(options.method_codes())
    if implicit_vr is None or not little_endian:
        ds.DeidentificationMethodCodeSequence = Sequence([_code_item(code) for code in codes])
        return
    # The same few items on every instance: encode them once per option set and copy the bytes.
    value = _encoded_code_sequence(codes, implicit_vr)
    ds[DEIDENTIFICATION_METHOD_CODE_SEQUENCE] = RawDataElement(
        BaseTag(DEIDENTIFICATION_METHOD_CODE_SEQUENCE), "SQ", len(value), value, 0, implicit_vr, True
    )


@lru_cache(maxsize=64)
def _encoded_code_sequence(codes: tuple[str, ...], implicit_vr: bool) -> bytes:
    holder = Dataset()
    holder.DeidentificationMethodCodeSequence = Sequence([_code_item(code) for code in codes])
    out = DicomBytesIO()
    out.is_implicit_VR = implicit_vr
    out.is_little_endian = True
    write_dataset(out, holder)
    header = 8 if implicit_vr else 12  # tag + length (implicit) / tag + VR + reserved + length (explicit)
    return out.getvalue()[header:]


def add_deidentification_method_code(ds: Dataset, code_value: str) -> None:
    """Record one more applied option (e.g. "113101" Clean Pixel Data after the pixel step ran).

    Idempotent; keeps the sequence in code order.
    """
    item = _code_item(code_value)
    existing = list(ds.get("DeidentificationMethodCodeSequence") or [])
    if any(getattr(i, "CodeValue", None) == code_value for i in existing):
        return
    existing.append(item)
    existing.sort(key=lambda i: str(getattr(i, "CodeValue", "")))
    ds.DeidentificationMethodCodeSequence = Sequence(existing)
