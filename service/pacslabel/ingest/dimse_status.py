"""C-STORE / C-ECHO response statuses we send (PS3.4 Annex B.2.3 and PS3.7 Annex C), with names."""

from __future__ import annotations

from pydicom import Dataset

SUCCESS = 0x0000
# Refused: Out of Resources (A7xx). Disk below the watermark or a spool write failed.
OUT_OF_RESOURCES = 0xA700
# Also A7xx: the queue database could not record the instance, so it was not accepted (the sender retries).
QUEUE_UNAVAILABLE = 0xA701
# Error: Data Set does not match SOP Class (A9xx), e.g. SOP Class/Instance UID missing or different.
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# Error: Cannot understand (Cxxx): the bytes cannot be read as a DICOM data set at all.
CANNOT_UNDERSTAND = 0xC000
# Failure: Processing failure (0110): an unexpected error in our handler.
PROCESSING_FAILURE = 0x0110

NAMES = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: Out of Resources",
    QUEUE_UNAVAILABLE: "Refused: Out of Resources (queue unavailable)",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: Data Set does not match SOP Class",
    CANNOT_UNDERSTAND: "Error: Cannot understand",
    PROCESSING_FAILURE: "Failure: Processing failure",
}


def with_comment(status: int, comment: str) -> Dataset:
    """A status dataset carrying an Error Comment (LO, at most 64 characters, never PHI)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds
