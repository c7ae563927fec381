"""Keyed pseudonyms for patient, accession and study identifiers.

Every value is an HMAC-SHA256 of the original under the project key, with a distinct namespace per kind
(so a PatientID pseudonym cannot be matched against an accession pseudonym). Same key + same original →
same pseudonym in every process, with no mapping table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PSEUDONYM_PREFIX = "PL-"
_PATIENT_ID_LENGTH = 13  # base32 chars: 65 bits, collision-free for any realistic archive
_SH_LENGTH = 16  # Short String (SH) maximum


def keyed_digest(key: bytes, namespace: str, value: str) -> bytes:
    return hmac.new(key, namespace.encode() + b"\x00" + value.encode("utf-8", "replace"), hashlib.sha256).digest()


def _base32(digest: bytes, length: int) -> str:
    return base64.b32encode(digest).decode("ascii")[:length]


class Pseudonymizer:
    _MEMO_LIMIT = 65536

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("The pseudonym key must not be empty.")
        self._key = key
        self._memo: dict[tuple[str, str], str] = {}

    def _memoised(self, namespace: str, value: str, length: int) -> str:
        # Every instance of a series asks for the same few pseudonyms: HMAC + base32 once per value.
        memo_key = (namespace, value)
        result = self._memo.get(memo_key)
        if result is None:
            result = _base32(keyed_digest(self._key, namespace, value), length)
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = result
        return result

    def patient_key(self, original_patient_id: str) -> str:
        """Hex HMAC of the original PatientID, for grouping instances by patient without holding it."""
        return keyed_digest(self._key, "patient-key", original_patient_id).hex()

    def patient_id(self, original_patient_id: str) -> str:
        """``PL-`` + base32 HMAC; also used as the pseudonymous PatientName so readers see one label."""
        return PSEUDONYM_PREFIX + self._memoised("patient-id", original_patient_id, _PATIENT_ID_LENGTH)

    def accession_number(self, original: str) -> str:
        return self._memoised("accession", original, _SH_LENGTH)

    def study_id(self, original: str) -> str:
        return self._memoised("study-id", original, _SH_LENGTH)

    def date_offset_days(self, original_patient_id: str, earliest: int, latest: int) -> int:
        """A keyed offset in [earliest, latest), one per original PatientID."""
        digest = keyed_digest(self._key, "date", original_patient_id)
        return earliest + int.from_bytes(digest[:8], "big") % (latest - earliest)
