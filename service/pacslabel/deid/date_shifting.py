"""Shifting DA and DT values by a whole number of days (Retain Longitudinal ... Modified Dates).

A whole-day shift keeps every interval exact, keeps times of day valid, and never needs TM changes: a
DT's time part and time-zone suffix are kept as they are. Values that cannot be parsed cannot be
shifted safely and are reported as ``None`` so the caller removes them.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

# Backwards between 1 and 10 years: no shifted date lands in the future.
EARLIEST_OFFSET_DAYS = -3652
LATEST_OFFSET_DAYS = -366

_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")


@lru_cache(maxsize=65536)  # a series repeats the same few dates on every instance
def shift_date(value: str, days: int) -> str | None:
    """Shift one DA value (``YYYYMMDD``; the retired ``YYYY.MM.DD`` form is accepted)."""
    text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


@lru_cache(maxsize=65536)
def shift_datetime(value: str, days: int) -> str | None:
    """Shift one DT value, keeping its precision, time part and offset suffix."""
    match = _DT_RE.match(value.strip())
    if not match:
        return None
    year, month, day, rest = match.groups()
    if rest and (month is None or day is None):
        return None  # a time without a full date: cannot place it
    try:
        base = dt.date(int(year), int(month or 1), int(day or 1))
        shifted = base + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if day is not None:
        return shifted.strftime("%Y%m%d") + rest
    if month is not None:
        return shifted.strftime("%Y%m")
    return shifted.strftime("%Y")


def shift_range_or_value(value: str, days: int, *, is_datetime: bool) -> str | None:
    """Shift a value that may be a range (``A-B``), as allowed in some query-derived attributes."""
    shift = shift_datetime if is_datetime else shift_date
    if not is_datetime and "-" in value:
        parts = value.split("-")
        shifted = [shift(p, days) if p else "" for p in parts]
        if any(s is None for s in shifted):
            return None
        return "-".join(s for s in shifted if s is not None)
    return shift(value, days)
