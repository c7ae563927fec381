"""Deterministic DICOM UIDs for the synthetic studies.

pydicom's ``generate_uid(prefix=None, ...)`` returns a random UUID-based UID and ignores ``entropy_srcs``, and
with a prefix it needs a registered root, so the generator derives its own ``2.25.<decimal>`` UIDs (PS3.5 B.2:
a 128-bit number written as one integer) from a hash of the seed and a stable name. Same seed and name give the
same UID on every machine.
"""

from __future__ import annotations

import hashlib

_NAMESPACE = "pacslabel-demo"


def _hash_to_uid(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    # 128 bits fit the 2.25 arc (at most 39 decimal digits, so the UID stays well under 64 characters).
    value = int.from_bytes(digest[:16], "big") or 1
    return f"2.25.{value}"


def derive_uid(seed: int, *names: str | int) -> str:
    """A UID that depends only on ``seed`` and ``names`` (e.g. ``derive_uid(7, "study", "p01", "st01")``)."""
    return _hash_to_uid("\x1f".join([_NAMESPACE, str(seed), *(str(n) for n in names)]))


# Identifies the writer, not a patient: fixed for every seed, and therefore not listed as planted PHI.
IMPLEMENTATION_CLASS_UID = _hash_to_uid(f"{_NAMESPACE}\x1fimplementation\x1f1")
IMPLEMENTATION_VERSION_NAME = "PACSLABEL_DEMO_1"
