"""Helpers for ingest tests: a pynetdicom SCU that records per-instance statuses, file builders, dcmtk runners."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
# Send files as stored (no decode), so that broken files reach the SCP as they are.
_config.STORE_SEND_CHUNKED_DATASET = True


@dataclass
class SendResult:
    statuses: dict[str, int] = field(default_factory=dict)  # file name -> status (missing: no response)
    comments: dict[str, str] = field(default_factory=dict)
    rejected: bool = False
    reject_reason: int | None = None


SEND_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.66.4",  # SEG
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
]


def scu(calling: str = "TESTSCU", transfer_syntaxes: list[str] | None = None) -> AE:
    ae = AE(ae_title=calling)
    ae.maximum_pdu_size = 0
    # One context per (class, transfer syntax), as storescu does, so a file goes out in its own encoding.
    for uid in SEND_CLASSES:
        for ts in transfer_syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian]:
            ae.add_requested_context(uid, ts)
    ae.add_requested_context(Verification)
    return ae


def send_files(port: int, files: Iterable[Path], *, calling: str = "TESTSCU", called: str = "PACSLABEL",
               transfer_syntaxes: list[str] | None = None, ae: AE | None = None) -> SendResult:
    """Send Part-10 files as they are (pynetdicom sends the raw bytes of a path without decoding them)."""
    ae = ae or scu(calling, transfer_syntaxes)
    result = SendResult()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        result.rejected = assoc.is_rejected
        if assoc.acceptor.primitive is not None:
            result.reject_reason = assoc.acceptor.primitive.diagnostic
        return result
    try:
        for path in files:
            status = assoc.send_c_store(Path(path))
            if "Status" in status:
                result.statuses[Path(path).name] = int(status.Status)
                if "ErrorComment" in status:
                    result.comments[Path(path).name] = str(status.ErrorComment)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return result


def storescu(port: int, paths: list[Path], *, calling: str = "STORESCU", called: str = "PACSLABEL",
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, "+sd", "+r", "-nh",
                           "127.0.0.1", str(port), *map(str, paths)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout, check=False)


def write_dataset(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
