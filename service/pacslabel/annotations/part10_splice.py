"""Write a received SEG back as Part-10 re-encoding only the elements that changed.

Saving a version changes a few header attributes (UIDs, author, dates, the predecessor reference, OHIF
repairs); it never changes the per-frame functional groups, the source references or the pixel data
(geometry problems are refused, not repaired: see ``ohif_repairs``). Re-encoding those with pydicom costs
more than everything else in a save (~0.15 s for 300 frames: every DS string of every frame is formatted
again), so the stored file is assembled from

- the preamble and file meta information, written by pydicom;
- for each top-level element in tag order: its received bytes when the dataset still holds the very value
  object read from them, else pydicom's encoding of the element (changed and new elements).

Received bytes are only reused in the transfer syntax they arrived in (little endian, not deflated); any
surprise falls back to a full pydicom encode, so this can cost time but never correctness. An element whose
value is changed *in place* (same object, new content) would be copied stale: repairs and stamping replace
the elements they change (``ohif_repairs`` works on copies of them, ``versioning`` deep-copies the header).
The tests compare the spliced file byte for byte with a full encode.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID

logger = logging.getLogger(__name__)

# VRs with the 12-byte explicit VR element header (2-byte reserved field, 4-byte length): PS3.5 §7.1.2.
PER_FRAME_FUNCTIONAL_GROUPS = BaseTag(0x52009230)
SOURCE_IMAGE_SEQUENCE = BaseTag(0x00082112)
# Large sequences the save path reads only through annotations.functional_groups (never converts).
KEPT_RAW = frozenset({PER_FRAME_FUNCTIONAL_GROUPS, SOURCE_IMAGE_SEQUENCE})
_LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


@dataclass(frozen=True)
class _Received:
    start: int
    end: int
    value: object


@dataclass(frozen=True, eq=False)
class ReceivedPart10:
    """A Part-10 instance as it arrived: its bytes, the dataset pydicom read, and where each top-level
    element's bytes are (empty when they cannot be reused)."""

    data: bytes
    dataset: Dataset
    elements: dict[BaseTag, _Received] = field(default_factory=dict)
    transfer_syntax: str = ""


def read_part10(data: bytes) -> ReceivedPart10:
    """Read a Part-10 instance and locate the bytes of its top-level elements.

    Every top-level element but those of ``KEPT_RAW`` is converted from its raw form here: pydicom converts on
    first access and replaces the value object, which would make an untouched element look changed later.

    Raises whatever :func:`pydicom.dcmread` raises for bytes that are not DICOM.
    """
    dataset = dcmread(BytesIO(data))
    try:
        elements, syntax = _locate(data, dataset)
    except Exception:  # locating is an optimisation: a surprise costs a full encode, never the save
        logger.debug("the elements of a received instance could not be located", exc_info=True)
        elements, syntax = {}, ""
    return ReceivedPart10(data, dataset, elements, syntax)


def _header_length(element: DataElement | RawDataElement, implicit: bool) -> int:
    return 8 if implicit or element.VR not in _LONG_HEADER_VRS else 12


def _locate(data: bytes, dataset: Dataset) -> tuple[dict[BaseTag, _Received], str]:
    file_meta = getattr(dataset, "file_meta", None)
    syntax = UID(str(file_meta.get("TransferSyntaxUID", ""))) if file_meta is not None else UID("")
    if not syntax or syntax.is_deflated or not syntax.is_little_endian:
        return {}, ""
    tags = sorted(dataset.keys())
    starts: list[int] = []
    for tag in tags:
        element = dataset.get_item(tag)
        # RawDataElement.value_tell / DataElement.file_tell (an undefined length SQ): where the value starts.
        value_tell = getattr(element, "value_tell", None) or getattr(element, "file_tell", None)
        if value_tell is None or element.VR is None:
            return {}, ""
        start = value_tell - _header_length(element, syntax.is_implicit_VR)
        if data[start:start + 4] != struct.pack("<HH", tag.group, tag.element):
            return {}, ""
        starts.append(start)
    # Top-level elements are contiguous: one ends where the next starts, the last one at the end of the file.
    ends = [*starts[1:], len(data)]
    if any(end <= start for start, end in zip(starts, ends, strict=True)):
        return {}, ""
    elements = {}
    for tag, start, end in zip(tags, starts, ends, strict=True):
        raw = dataset.get_item(tag)
        if tag in KEPT_RAW and isinstance(raw, RawDataElement):
            # Left raw: validation and repairs read these through annotations.functional_groups, which does not
            # convert them (300 frames would become 300 Datasets for nothing: ~6 ms for SourceImageSequence).
            elements[tag] = _Received(start, end, raw.value)
        else:
            elements[tag] = _Received(start, end, dataset[tag].value)
    return elements, str(syntax)


def full_part10(dataset: Dataset) -> bytes:
    """The whole dataset encoded by pydicom (preamble, file meta, dataset)."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encode_part10(dataset: Dataset, received: ReceivedPart10 | None = None) -> bytes:
    """``dataset`` as Part-10 bytes, reusing the received bytes of every element that was not replaced.

    Without ``received`` (or when its bytes cannot be reused) this is a full pydicom encode.
    """
    file_meta = getattr(dataset, "file_meta", None)
    if (received is None or not received.elements or file_meta is None
            or str(file_meta.get("TransferSyntaxUID", "")) != received.transfer_syntax):
        return full_part10(dataset)
    try:
        return _spliced(dataset, received)
    except Exception:  # e.g. an element pydicom cannot write alone (ambiguous VR): the full path decides
        logger.debug("splicing failed; encoding the whole instance", exc_info=True)
        return full_part10(dataset)


def _spliced(dataset: Dataset, received: ReceivedPart10) -> bytes:
    meta_only = Dataset()
    meta_only.file_meta = dataset.file_meta
    meta_only.preamble = getattr(dataset, "preamble", None)
    buffer = BytesIO()
    meta_only.save_as(buffer, enforce_file_format=True)
    chunks: list[bytes | memoryview] = [buffer.getvalue()]
    original = memoryview(received.data)
    implicit = UID(received.transfer_syntax).is_implicit_VR
    character_set = dataset.get("SpecificCharacterSet", "ISO_IR 6")
    run_start = run_end = -1
    for tag in sorted(dataset.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths: pydicom does not write them either
        element = dataset.get_item(tag)
        kept = received.elements.get(tag)
        if kept is not None and element.value is kept.value:
            if kept.start != run_end:
                if run_end > run_start:
                    chunks.append(original[run_start:run_end])
                run_start = kept.start
            run_end = kept.end
            continue
        if run_end > run_start:
            chunks.append(original[run_start:run_end])
            run_start = run_end = -1
        encoder = DicomBytesIO()
        encoder.is_little_endian = True
        encoder.is_implicit_VR = implicit
        write_data_element(encoder, dataset[tag], character_set)
        chunks.append(encoder.getvalue())
    if run_end > run_start:
        chunks.append(original[run_start:run_end])
    return b"".join(chunks)
