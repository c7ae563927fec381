"""Reading received bytes and writing de-identified Part-10 bytes, with PHI-free failure reasons."""

from __future__ import annotations

import io
import logging

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from pacslabel.deid.errors import DeidentificationError

logger = logging.getLogger(__name__)

_PREAMBLE_LENGTH = 128
_NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
# A dataset without meta must start with a plausible tag: group 0x0008 (identifying) or 0x0002/0x0004.
_PLAUSIBLE_FIRST_GROUPS = frozenset({0x0002, 0x0004, 0x0008})


def read_dataset(raw: bytes) -> Dataset:
    """Parse Part-10 bytes, or a bare dataset without preamble/meta (as pynetdicom hands it over)."""
    if not raw:
        raise DeidentificationError("empty input")
    is_part10 = len(raw) > _PREAMBLE_LENGTH + 4 and raw[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] == b"DICM"
    try:
        ds = dcmread(io.BytesIO(raw), force=not is_part10)
        keys = list(ds.keys())
    except Exception as exc:
        raise DeidentificationError(f"not a parseable DICOM dataset ({type(exc).__name__})") from None
    if not keys:
        raise DeidentificationError("no data elements found")
    if not is_part10 and keys[0] >> 16 not in _PLAUSIBLE_FIRST_GROUPS:
        raise DeidentificationError("not DICOM: no Part-10 header and no plausible first data element")
    _check_not_truncated(ds, keys)
    return ds


def _check_not_truncated(ds: Dataset, keys: list[int]) -> None:
    last = ds.get_item(keys[-1])
    value = getattr(last, "value", None)
    if getattr(last, "is_raw", False) and isinstance(value, bytes):
        if last.length != _UNDEFINED_LENGTH and len(value) < last.length:
            raise DeidentificationError(f"truncated dataset: element {keys[-1]:08X} is shorter than its length")
    if PIXEL_DATA in ds and transfer_syntax_of(ds) in _NATIVE_SYNTAXES | {ExplicitVRBigEndian}:
        expected = _expected_native_pixel_bytes(ds)
        pixel = ds.get_item(PIXEL_DATA)
        length = len(pixel.value) if pixel is not None and isinstance(pixel.value, bytes) else None
        if expected is not None and length is not None and length < expected:
            raise DeidentificationError(f"truncated pixel data: {length} bytes, {expected} expected")


def _expected_native_pixel_bytes(ds: Dataset) -> int | None:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    total_bits = rows * columns * samples * frames * bits
    return (total_bits + 7) // 8


def transfer_syntax_of(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(str(meta.TransferSyntaxUID).strip("\x00 "))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def check_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax to write back in; refuse ones pydicom cannot encode."""
    syntax = transfer_syntax_of(ds)
    if syntax not in UID_dictionary or UID_dictionary[syntax][1] != "Transfer Syntax":
        raise DeidentificationError(f"unknown or private transfer syntax {syntax}: cannot be written back")
    if syntax == ExplicitVRBigEndian:
        # Retired; rewriting it would need byte-swapping of pixel data we do not decode.
        raise DeidentificationError("Explicit VR Big Endian (retired) is not supported")
    return syntax


def write_part10(ds: Dataset, syntax: UID) -> bytes:
    """Preamble + file meta + dataset, in the syntax it arrived in.

    Untouched elements are still raw bytes and are copied through. Deflate goes through ``dcmwrite``;
    the common syntaxes are written directly (``dcmwrite`` deep-copies the meta on every call).
    """
    ds.file_meta.TransferSyntaxUID = syntax
    try:
        if syntax == DeflatedExplicitVRLittleEndian:
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            return buffer.getvalue()
        out = DicomBytesIO()
        out.write(b"\x00" * _PREAMBLE_LENGTH + b"DICM")
        write_file_meta_info(out, ds.file_meta, enforce_standard=True)
        out.is_implicit_VR = syntax == ImplicitVRLittleEndian
        out.is_little_endian = True
        write_dataset(out, ds)
        return out.getvalue()
    except Exception as exc:
        raise DeidentificationError(f"the de-identified dataset could not be encoded ({type(exc).__name__})") from None
