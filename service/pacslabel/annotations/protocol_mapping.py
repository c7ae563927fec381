"""Map SEG segments onto a project's protocol labels.

A segment matches a protocol label by its SegmentLabel (case-insensitive, surrounding blanks ignored) or,
failing that, by its SegmentedPropertyCategory + SegmentedPropertyType codes. The label name wins because
OHIF writes the same hard-coded codes (``T-D0050 SRT "Tissue"``) for every segment, so codes alone cannot
tell two OHIF segments apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

# What OHIF 3.12 writes as category AND type of every segment (ohif-integration notes §5.1).
OHIF_PLACEHOLDER_CODE = ("T-D0050", "SRT")


@dataclass(frozen=True)
class ProtocolLabel:
    """One label of a project protocol (its ontology entry): a name and the codes a SEG segment carries."""

    name: str
    category: Code
    type: Code
    color: tuple[int, int, int] | None = None  # sRGB, for CIELab display colour

    def matches_name(self, label: str | None) -> bool:
        return label is not None and normalise_label(label) == normalise_label(self.name)

    def matches_codes(self, category: Code | None, type_: Code | None) -> bool:
        return same_code(category, self.category) and same_code(type_, self.type)


def normalise_label(label: str) -> str:
    return " ".join(str(label).split()).casefold()


def code_key(code: Code | Dataset | None) -> tuple[str, str] | None:
    """(value, scheme) of a Code or a code sequence item; long/URN code values count as the value."""
    if code is None:
        return None
    if isinstance(code, Dataset):
        value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue")
        scheme = code.get("CodingSchemeDesignator")
        if value is None or scheme is None:
            return None
        return (str(value), str(scheme))
    return (str(code.value), str(code.scheme_designator))


def same_code(a: Code | Dataset | None, b: Code | Dataset | None) -> bool:
    """Two codes are the same concept when value and scheme agree (SRT and SCT are one scheme since 2019)."""
    key_a, key_b = code_key(a), code_key(b)
    if key_a is None or key_b is None:
        return False
    scheme = {"SRT": "SCT"}
    return key_a[0] == key_b[0] and scheme.get(key_a[1], key_a[1]) == scheme.get(key_b[1], key_b[1])


def is_ohif_placeholder(code: Dataset | Code | None) -> bool:
    return code_key(code) == OHIF_PLACEHOLDER_CODE


def code_from_item(item: Dataset | None) -> Code | None:
    if item is None:
        return None
    key = code_key(item)
    if key is None:
        return None
    return Code(key[0], key[1], str(item.get("CodeMeaning", "")))


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def find_protocol_label(
    segment: Dataset,
    labels: Sequence[ProtocolLabel | str],
) -> ProtocolLabel | str | None:
    """The protocol label a SegmentSequence item stands for, or None.

    Plain strings in ``labels`` match by name only; :class:`ProtocolLabel` entries by name, then by codes
    (a placeholder OHIF code never matches by code: it says nothing about the label).
    """
    segment_label = segment.get("SegmentLabel")
    for label in labels:
        name = label if isinstance(label, str) else label.name
        if segment_label is not None and normalise_label(segment_label) == normalise_label(name):
            return label
    category = first_item(segment, "SegmentedPropertyCategoryCodeSequence")
    type_item = first_item(segment, "SegmentedPropertyTypeCodeSequence")
    if is_ohif_placeholder(type_item):
        return None
    for label in labels:
        if isinstance(label, ProtocolLabel) and label.matches_codes(
            code_from_item(category), code_from_item(type_item)
        ):
            return label
    return None
