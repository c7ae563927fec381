"""The PHI ledger: every identifying value the generator plants is recorded at the moment it is planted.

Dataset builders never write an identifying literal directly; they pass it through the ledger, which returns
it unchanged. That keeps ``manifest.json`` complete by construction, and the leak tests of the rest of the
project can then prove that de-identification removed every one of these values.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

PhiKind = Literal[
    "patient_name",
    "person_name",
    "patient_id",
    "issuer",
    "accession_number",
    "study_id",
    "procedure_id",
    "institution",
    "address",
    "department",
    "telephone",
    "station",
    "serial_number",
    "free_text",
    "date_text",
    "burned_in_text",
]

# Shorter name components ("Ann", "Dr") occur inside ordinary words ("Annotation"), which would make substring
# leak searches report false leaks; the full PN value is always listed.
_MIN_NAME_COMPONENT = 4


@dataclass
class PhiLedger:
    """Collects planted PHI by kind, plus all UIDs, dates, times and date-times written into any file."""

    strings: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    uids: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    times: set[str] = field(default_factory=set)
    datetimes: set[str] = field(default_factory=set)

    def value(self, kind: PhiKind, value: str) -> str:
        """Record an identifying string and return it unchanged."""
        self.strings[kind].add(value)
        return value

    def person(self, pn: str, kind: Literal["patient_name", "person_name"] = "person_name") -> str:
        """Record a PN value (``Family^Given^Middle``) and each of its name components."""
        self.strings[kind].add(pn)
        for component in pn.split("^"):
            if len(component) >= _MIN_NAME_COMPONENT:
                self.strings[kind].add(component)
        return pn

    def display_name(self, pn: str, style: Literal["given_family", "family_given"] = "given_family") -> str:
        """A PN rendered as people write it in free text ("Hans Müller" / "Müller, Hans"), recorded."""
        family, given = (pn.split("^") + [""])[:2]
        text = f"{given} {family}" if style == "given_family" else f"{family}, {given}"
        self.strings["patient_name"].add(text)
        return text

    def text(self, value: str) -> str:
        """Record a free-text phrase; its identifying fragments must be recorded by the caller as well."""
        return self.value("free_text", value)

    def date(self, da: str) -> str:
        """Record a DA value (YYYYMMDD)."""
        self.dates.add(da)
        return da

    def date_text(self, da: str, fmt: str) -> str:
        """A date as it appears in free text (e.g. ``14.03.2023``): the DA form and the text form recorded."""
        self.dates.add(da)
        text = datetime.strptime(da, "%Y%m%d").strftime(fmt)
        self.strings["date_text"].add(text)
        return text

    def time(self, tm: str) -> str:
        self.times.add(tm)
        return tm

    def datetime(self, dt: str) -> str:
        """Record a DT value; its date part is also an original date."""
        self.datetimes.add(dt)
        self.dates.add(dt[:8])
        return dt

    def uid(self, uid: str) -> str:
        self.uids.add(uid)
        return uid

    @property
    def phi_strings(self) -> list[str]:
        return sorted(set().union(*self.strings.values())) if self.strings else []

    def to_manifest(self) -> dict[str, Any]:
        return {
            "phi_strings": self.phi_strings,
            "phi_by_kind": {kind: sorted(values) for kind, values in sorted(self.strings.items())},
            "uids": sorted(self.uids),
            "dates": sorted(self.dates),
            "times": sorted(self.times),
            "datetimes": sorted(self.datetimes),
        }
