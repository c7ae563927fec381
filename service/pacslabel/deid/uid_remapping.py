"""Keyed, stable UID replacement: one uid → uid function for every UI value.

Recipe (notes §6, after KARNAK): HMAC-SHA256(key, "uid" NUL uid), first 128 bits, UUID version 8 and
RFC 4122 variant bits set, written as ``2.25.<decimal>`` (≤ 39 digits, no leading zeros, ≤ 44 chars).
The same key and UID give the same result in every process and run; another key gives another UID.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom.uid import UID_dictionary

# Tags whose UI values name classes, syntaxes or coding schemes, never instances: kept as they are
# (even private class UIDs, which a receiver needs to interpret the object).
CLASS_UID_TAGS = frozenset(
    {
        0x00020002,  # Media Storage SOP Class UID
        0x00020010,  # Transfer Syntax UID
        0x00020012,  # Implementation Class UID
        0x00041510,  # Referenced SOP Class UID in File
        0x00041512,  # Referenced Transfer Syntax UID in File
        0x00080016,  # SOP Class UID
        0x0008001A,  # Related General SOP Class UID
        0x0008001B,  # Original Specialized SOP Class UID
        0x00080062,  # SOP Classes in Study
        0x0008010C,  # Coding Scheme UID
        0x0008010D,  # Context Group Extension Creator UID
        0x00080117,  # Context UID
        0x00080118,  # Mapping Resource UID
        0x00081150,  # Referenced SOP Class UID
        0x0004151A,  # Referenced Related General SOP Class UID in File
        0x0008040E,  # Stored Instance Transfer Syntax UID
        0x0008115A,  # SOP Classes Supported
        0x00083002,  # Available Transfer Syntax UID
        0x0018100B,  # Manufacturer's Device Class UID
        0x00340003,  # Flow Transfer Syntax UID
        0x04000010,  # MAC Calculation Transfer Syntax UID
        0x04000510,  # Encrypted Content Transfer Syntax UID
        0x30100052,  # Pertinent SOP Classes in Study
        0x30100053,  # Pertinent SOP Classes in Series
    }
)

_DICOM_ROOT = "1.2.840.10008."
_UID_NAMESPACE = b"uid\x00"
_CACHE_LIMIT = 200_000


def is_well_known_uid(uid: str) -> bool:
    """UIDs defined by the standard (SOP classes, transfer syntaxes, coding schemes, well-known frames of
    reference...) identify nothing about a patient and must stay as they are."""
    return uid.startswith(_DICOM_ROOT) or uid in UID_dictionary


def keyed_uid(key: bytes, uid: str) -> str:
    digest = bytearray(hmac.new(key, _UID_NAMESPACE + uid.encode("ascii", "replace"), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # UUID version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "2.25." + str(int.from_bytes(digest, "big"))


class UidRemapper:
    """Maps original UIDs to keyed ``2.25.`` UIDs, with a bounded in-process cache."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("The pseudonym key must not be empty.")
        self._key = key
        self._cache: dict[str, str] = {}

    def remap(self, uid: str) -> str:
        uid = uid.strip(" \x00")
        if not uid or is_well_known_uid(uid):
            return uid
        cached = self._cache.get(uid)
        if cached is not None:
            return cached
        new = keyed_uid(self._key, uid)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[uid] = new
        return new
