"""Decoding SEG frames and the small SEG constants shared by validation, reading and repairs."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # BINARY and FRACTIONAL
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # LABELMAP (Sup 243)
SEG_SOP_CLASS_UIDS = {SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE}


def decode_frames(seg: Dataset) -> np.ndarray:
    """All frames of a SEG as a (frames, rows, columns) array of stored values.

    pydicom unpacks 1-bit BINARY frames and decodes the compressed transfer syntaxes whose plugins are installed
    (JPEG-LS through pyjpegls). A copy is decoded so that the caller's Dataset does not keep a cached array.
    """
    if "PixelData" not in seg:
        return np.zeros((0, int(seg.get("Rows", 0)), int(seg.get("Columns", 0))), dtype=np.uint8)
    probe = Dataset()
    probe.update(seg)
    file_meta = getattr(seg, "file_meta", None)
    if file_meta is not None:
        probe.file_meta = file_meta
    array = probe.pixel_array
    if array.ndim == 2:
        array = array[np.newaxis]
    return array


PIXEL_DATA_TAG = 0x7FE00010


def _is_native(seg: Dataset) -> bool:
    file_meta = getattr(seg, "file_meta", None)
    syntax = UID(str(file_meta.get("TransferSyntaxUID", ""))) if file_meta is not None else None
    # A dataset built in memory without file meta is written native (pydicom's default encoding).
    return syntax is None or not syntax or not syntax.is_compressed


def native_pixel_bits(seg: Dataset) -> int:
    """NumberOfFrames x Rows x Columns x SamplesPerPixel x BitsAllocated: the bits native PixelData holds.

    DICOM packs the frames back to back without padding between them (PS3.5 §8.1.1), so 1-bit BINARY frames
    need not start on a byte boundary.
    """
    frames = int(seg.get("NumberOfFrames", 1) or 1)
    samples = int(seg.get("SamplesPerPixel", 1) or 1)
    return frames * int(seg.Rows) * int(seg.Columns) * samples * int(seg.get("BitsAllocated", 1) or 1)


def pixel_length_problem(seg: Dataset) -> str | None:
    """Why the native PixelData is too short for the frames the header announces, or None.

    Compressed (encapsulated) pixel data are checked when decoded.
    """
    if "PixelData" not in seg or not _is_native(seg):
        return None
    value = seg.get_item(PIXEL_DATA_TAG).value
    have = len(value) if value is not None else 0
    need = (native_pixel_bits(seg) + 7) // 8
    if have >= need:
        return None
    return (f"PixelData holds {have} bytes, but NumberOfFrames ({int(seg.get('NumberOfFrames', 1) or 1)}) x Rows "
            f"({int(seg.Rows)}) x Columns ({int(seg.Columns)}) x BitsAllocated ({int(seg.get('BitsAllocated', 1))}) "
            f"needs {need} bytes; the pixel data are truncated.")


def any_pixel_set(seg: Dataset) -> bool:
    """Whether any stored value of any frame is non-zero.

    Native pixel data are scanned as received, without unpacking bits or building a frame array (the pixel
    data of a 300-frame 512x512 SEG unpack to 78 MB); compressed ones are decoded. The caller checks the
    length first (:func:`pixel_length_problem`).
    """
    if "PixelData" not in seg:
        return False
    if not _is_native(seg):
        return bool(np.any(decode_frames(seg)))
    value = seg.get_item(PIXEL_DATA_TAG).value
    bits = native_pixel_bits(seg)
    whole, rest = divmod(bits, 8)
    raw = np.frombuffer(value, dtype=np.uint8, count=min(whole, len(value)))
    if raw.any():
        return True
    # Bits past the last frame in the final byte are padding (zero by the standard, but not ours to judge).
    return bool(rest and whole < len(value) and value[whole] & ((1 << rest) - 1))
