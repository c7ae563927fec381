"""Decoding SEG frames and the small SEG constants shared by validation, reading and repairs."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

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
