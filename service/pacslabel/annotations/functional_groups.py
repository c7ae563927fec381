"""Read values out of a SEG's per-frame functional groups without a pydicom Dataset for every nested item.

A 300-frame SEG has ~1,200 nested sequences (derivation, source image, plane position, segment
identification per frame). Converting each through pydicom's Dataset machinery costs ~80 ms, more than
every check that uses them. pydicom keeps a nested sequence of explicit length as raw bytes until it is
accessed; here such bytes are split into items and read with pydicom's own element reader
(``data_element_generator``), which yields raw elements and builds no Dataset. Anything else (a sequence
pydicom already converted, one of undefined length, items of undefined length, big endian) goes through
pydicom's ``read_sequence`` (without converting the element in place): the values are the same either way,
only the cost differs.

An *item* here is a pydicom Dataset or a mapping of tag to (raw) element; both answer :func:`element`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import Any, TypeAlias

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_sequence
from pydicom.tag import BaseTag, Tag

from pacslabel.annotations.errors import AnnotationRejected

Element: TypeAlias = DataElement | RawDataElement
Item: TypeAlias = Dataset | Mapping[BaseTag, Element]

_ITEM_TAG = (0xFFFE, 0xE000)
_UNDEFINED_LENGTH = 0xFFFFFFFF


def element(item: Item | None, tag: int) -> Element | None:
    """The element ``tag`` of an item, raw if it was never converted; None when absent."""
    if item is None:
        return None
    if isinstance(item, Dataset):
        return item.get_item(BaseTag(tag)) if BaseTag(tag) in item else None
    return item.get(BaseTag(tag))


def _split_items(value: bytes) -> list[bytes] | None:
    """The bodies of the explicit-length items of a little endian sequence value, or None if irregular."""
    bodies = []
    position = 0
    while position < len(value):
        if position + 8 > len(value):
            return None
        group, number, length = struct.unpack_from("<HHI", value, position)
        end = position + 8 + length
        if (group, number) != _ITEM_TAG or length == _UNDEFINED_LENGTH or end > len(value):
            return None
        bodies.append(value[position + 8:end])
        position = end
    return bodies


_LONG_HEADER_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                              b"UV"})
_UPPER = frozenset(range(ord("A"), ord("Z") + 1))


def walk_explicit_le(body: bytes) -> dict[BaseTag, RawDataElement] | None:
    """The top-level elements of an explicit VR little endian item body, as pydicom's RawDataElements.

    Only the element headers of PS3.5 7.1.2 are parsed (tag, VR, 2- or 4-byte length); values are sliced, never
    interpreted. Anything irregular (undefined length, a VR that is not two capital letters, a value running
    past the end) gives None and the caller uses pydicom's own reader, so this can cost time but never change
    an answer; a test compares it with ``data_element_generator`` element by element.
    """
    elements: dict[BaseTag, RawDataElement] = {}
    position, end = 0, len(body)
    unpack = struct.unpack_from
    while position < end:
        if position + 8 > end:
            return None
        group, number = unpack("<HH", body, position)
        vr = body[position + 4:position + 6]
        if vr[0] not in _UPPER or vr[1] not in _UPPER:
            return None
        if vr in _LONG_HEADER_VRS:
            if position + 12 > end:
                return None
            length = unpack("<I", body, position + 8)[0]
            start = position + 12
        else:
            length = unpack("<H", body, position + 6)[0]
            start = position + 8
        if length == _UNDEFINED_LENGTH or start + length > end:
            return None
        tag = BaseTag(group << 16 | number)
        elements[tag] = RawDataElement(tag, vr.decode("ascii"), length, body[start:start + length], start, False,
                                       True)
        position = start + length
    return elements


def items(item: Item | None, tag: int) -> list[Item]:
    """The items of sequence ``tag`` of ``item`` (empty when absent or empty)."""
    found = element(item, tag)
    if found is None:
        return []
    if not isinstance(found, RawDataElement):
        return list(found.value or [])
    value = found.value
    if not value:
        return []
    if isinstance(value, bytes) and found.is_little_endian and found.length != _UNDEFINED_LENGTH:
        bodies = _split_items(value)
        if bodies is not None and not found.is_implicit_VR:
            walked = [walk_explicit_le(body) for body in bodies]
            if all(elements is not None for elements in walked):
                return walked  # type: ignore[return-value]
        if bodies is not None:
            try:
                return [
                    {raw.tag: raw for raw in data_element_generator(BytesIO(body), found.is_implicit_VR, True)}
                    for body in bodies
                ]
            except Exception:  # pydicom's reader gives up on something: let read_sequence decide below
                pass
    # Not item[tag] on a Dataset: that would convert the element in place, and a converted per-frame sequence
    # can no longer be copied from the received bytes when the version is written (part10_splice).
    return list(read_sequence(BytesIO(value), found.is_implicit_VR, found.is_little_endian, len(value), "iso8859"))


def first(item: Item | None, tag: int) -> Item | None:
    """The first item of sequence ``tag`` (a functional group macro has exactly one), or None."""
    found = items(item, tag)
    return found[0] if found else None


def _raw_text(raw: RawDataElement) -> str:
    value = raw.value or b""
    return (value if isinstance(value, bytes) else bytes(value)).decode("ascii", "replace").rstrip("\0 ")


def decimals(item: Item | None, tag: int) -> tuple[float, ...] | None:
    """A DS (multi-)value as floats; None when absent, () when empty."""
    found = element(item, tag)
    if found is None:
        return None
    if isinstance(found, RawDataElement):
        text = _raw_text(found)
        parts = [part.strip() for part in text.split("\\")] if text.strip() else []
    else:
        value: Any = found.value
        if value is None or value == "":
            return ()
        parts = [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
    try:
        return tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        raise AnnotationRejected(f"{keyword_for_tag(tag) or 'Element'} {Tag(tag)} holds {parts!r}, which are not "
                                 "decimal numbers.") from None


def unsigned_short(item: Item | None, tag: int) -> int | None:
    """The first value of a US element; None when absent or empty."""
    found = element(item, tag)
    if found is None:
        return None
    if isinstance(found, RawDataElement):
        value = found.value or b""
        if len(value) < 2:
            return None
        return int(struct.unpack_from("<H" if found.is_little_endian else ">H", value)[0])
    value = found.value
    if value is None or value == "":
        return None
    return int(value[0] if isinstance(value, list | tuple) else value)


def uid(item: Item | None, tag: int) -> str | None:
    """A UI value as text; None when absent."""
    found = element(item, tag)
    if found is None:
        return None
    if isinstance(found, RawDataElement):
        return _raw_text(found)
    return str(found.value or "")
