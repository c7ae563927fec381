"""Clean Descriptors (E.3.5): keep descriptions, remove what identifies inside them.

What is removed from free text: the parts of every person name, the identifiers (patient IDs, accession,
study ID, order numbers...), institution/station/address words found elsewhere in the header, and any
date-like or phone/ID-like token in common formats — whether or not it matches a header value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Header attributes whose values must not survive inside descriptions.
IDENTIFIER_TAGS = (
    0x00100020,  # Patient ID
    0x00101000,  # Other Patient IDs
    0x00080050,  # Accession Number
    0x00200010,  # Study ID
    0x00380010,  # Admission ID
    0x00402016,  # Placer Order Number / Imaging Service Request
    0x00402017,  # Filler Order Number / Imaging Service Request
    0x00401001,  # Requested Procedure ID
    0x00400009,  # Scheduled Procedure Step ID
    0x00400253,  # Performed Procedure Step ID
    0x00102154,  # Patient's Telephone Numbers
    0x00101090,  # Medical Record Locator
)
PLACE_TAGS = (
    0x00101040,  # Patient's Address
    0x00080081,  # Institution Address
    0x00380300,  # Current Patient Location
    0x00380400,  # Patient's Institution Residence
)
INSTITUTION_TAGS = (0x00080080, 0x00081040)  # Institution Name, Institutional Department Name
DEVICE_TAGS = (0x00081010, 0x00181000)  # Station Name, Device Serial Number
OTHER_PATIENT_IDS_SEQUENCE = 0x00101002
TERM_SOURCE_TAGS = IDENTIFIER_TAGS + PLACE_TAGS + INSTITUTION_TAGS + DEVICE_TAGS + (OTHER_PATIENT_IDS_SEQUENCE,)

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_D = r"(?<!\d)"
_ND = r"(?!\d)"
GENERIC_PATTERNS = (
    # 20230415, 2023-04-15, 2023/4/15, 2023.04.15
    rf"{_D}(?:1[89]|20)\d\d[-/.]?(?:0?[1-9]|1[0-2])[-/.]?(?:0?[1-9]|[12]\d|3[01]){_ND}",
    # 15/04/2023, 04-15-23, 15.4.2023 (day-first and month-first alike)
    rf"{_D}\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:\d{{4}}|\d{{2}}){_ND}",
    # 15 Apr 2023, 15-APR-2023, 15Apr23
    rf"{_D}\d{{1,2}}[ -]?{_MONTHS}[ -,]*(?:\d{{4}}|\d{{2}}){_ND}",
    # April 15, 2023 / Apr 15th 2023
    rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:\d{{4}}|\d{{2}}){_ND}",
    # phone numbers 555-123-4567, (555) 123 4567
    rf"(?:\(\d{{3}}\)\s*|{_D}\d{{3}}[-. ])\d{{3}}[-. ]\d{{4}}{_ND}",
    # long digit runs: MRNs, accession numbers, serials
    rf"{_D}\d{{6,}}{_ND}",
)
_GENERIC_RE = re.compile("|".join(GENERIC_PATTERNS), re.IGNORECASE)
_SPLIT_RE = re.compile(r"[\^=,;/\\\s]+")
_SPACES_RE = re.compile(r"\s{2,}")
# Left-overs of removed terms: empty brackets "( , )" and separators with nothing between them.
_EMPTY_BRACKETS_RE = re.compile(r"[(\[]\s*[,;:/]?\s*[)\]]")
_SPACE_BEFORE_SEPARATOR_RE = re.compile(r"\s+([,;:])")
_TRIM = " -_,;:.^/"


def _values(ds: Dataset, tag: int) -> list[str]:
    if tag not in ds:
        return []
    value = ds[tag].value
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v) for v in items if v not in (None, "")]


def collect_sensitive_terms(
    ds: Dataset,
    person_names: Iterable[str],
    *,
    include_institution: bool,
    include_device: bool,
) -> tuple[str, ...]:
    """Words and phrases from the header that must not appear in cleaned descriptions."""
    terms: set[str] = set()
    for name in person_names:
        terms.add(name.replace("^", " ").strip())
        terms.update(part for part in _SPLIT_RE.split(name) if len(part) >= 2)
    for tag in IDENTIFIER_TAGS:
        terms.update(v.strip() for v in _values(ds, tag))
    if OTHER_PATIENT_IDS_SEQUENCE in ds:
        for item in ds[OTHER_PATIENT_IDS_SEQUENCE].value or []:
            terms.update(v.strip() for v in _values(item, 0x00100020))
    place_tags = (
        PLACE_TAGS + (INSTITUTION_TAGS if include_institution else ()) + (DEVICE_TAGS if include_device else ())
    )
    for tag in place_tags:
        for value in _values(ds, tag):
            terms.add(value.strip())
            terms.update(word for word in _SPLIT_RE.split(value) if len(word) >= 4)
    return tuple(sorted((t for t in terms if len(t) >= 2), key=lambda t: (-len(t), t)))


@lru_cache(maxsize=512)
def _terms_regex(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    if not terms:
        return None
    parts = []
    for term in terms:
        escaped = re.escape(term)
        # Short terms (initials, two-letter names) only as whole words, to spare words like "Liver".
        parts.append(escaped if len(term) >= 4 else rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])")
    return re.compile("|".join(parts), re.IGNORECASE)


class DescriptorCleaner:
    """Cleans free text of one header against its identifying terms.

    Instances are shared by the instances of a series (same header values), so results are memoised:
    a series repeats the same descriptions on every slice.
    """

    _MEMO_LIMIT = 4096

    def __init__(self, terms: tuple[str, ...]) -> None:
        self._terms_re = _terms_regex(terms)
        self._memo: dict[str, str] = {}
        # Encoded value bytes → encoded cleaned bytes, filled by the engine for raw elements.
        self.raw_results: dict[tuple[bytes, bool], bytes] = {}

    def remember_raw(self, key: tuple[bytes, bool], result: bytes) -> None:
        if len(self.raw_results) >= self._MEMO_LIMIT:
            self.raw_results.clear()
        self.raw_results[key] = result

    def clean(self, text: str) -> str:
        if not text:
            return text
        cleaned = self._memo.get(text)
        if cleaned is None:
            cleaned = self._clean(text)
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            self._memo[text] = cleaned
        return cleaned

    def _clean(self, text: str) -> str:
        if self._terms_re is not None:
            text = self._terms_re.sub(" ", text)
        text = _GENERIC_RE.sub(" ", text)
        text = _EMPTY_BRACKETS_RE.sub(" ", text)
        text = _SPACE_BEFORE_SEPARATOR_RE.sub(r"\1", text)
        return _SPACES_RE.sub(" ", text).strip(_TRIM)
