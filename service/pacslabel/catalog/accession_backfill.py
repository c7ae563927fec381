"""Backfill of ``catalog_studies.accession_key`` for studies catalogued before ingest recorded it.

The key is the de-identified AccessionNumber itself (a keyed HMAC of the original, ``deid/pseudonyms.py``),
so nothing is computed here: it is read back from Orthanc, from one instance of each study, through the one
Orthanc door, and written only where the column is NULL (idempotent: a rerun fills what is still missing
and changes nothing else). Each batch commits on its own, so an interrupted run keeps what it did, and is
audited with its counts (never a value: keys are pseudonymous, but there is no need to spread them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from pacslabel.audit.service import record
from pacslabel.catalog import repository
from pacslabel.catalog.service import accession_key
from pacslabel.db import session_scope
from pacslabel.orthanc.client import OrthancClient

logger = logging.getLogger(__name__)

ACCESSION_NUMBER = "00080050"
BATCH_SIZE = 200
AUDIT_ACTION = "catalog.accession_keys.backfill"


@dataclass
class BackfillReport:
    """What one run did, per study looked at."""

    filled: int = 0
    without_accession: int = 0  # the de-identified instance has no (or an empty) AccessionNumber
    not_in_orthanc: int = 0  # catalogued, but Orthanc holds no instance of it
    unchanged: int = 0  # filled meanwhile by someone else (ingest of a new instance, a parallel run)
    left_null: list[str] = field(default_factory=list)  # Study Instance UIDs still without a key

    @property
    def looked_at(self) -> int:
        return self.filled + self.without_accession + self.not_in_orthanc + self.unchanged


def read_accession_key(orthanc: OrthancClient, study_instance_uid: str) -> tuple[bool, str | None]:
    """(whether Orthanc holds the study, its de-identified AccessionNumber as the catalogue records it)."""
    found = orthanc.search_for_instances(study_instance_uid, limit=1, fields=[ACCESSION_NUMBER])
    if not found:
        return False, None
    values = found[0].get(ACCESSION_NUMBER, {}).get("Value") or []
    return True, accession_key({"AccessionNumber": values[0]} if values else {})


def backfill_accession_keys(factory: sessionmaker[Session], orthanc: OrthancClient, *, actor: str,
                            batch_size: int = BATCH_SIZE, progress: Callable[[int], None] | None = None
                            ) -> BackfillReport:
    """Fill ``accession_key`` of every study that has none, reading Orthanc once per study; ``progress``
    is called with the number of studies done after each one.

    Orthanc is read with no transaction open; each batch is then written in one short transaction (SQLite
    has one writer: the ingest workers must not wait for Orthanc's answers)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = BackfillReport()
    after_id = 0
    while True:
        with session_scope(factory) as session:
            batch = repository.studies_without_accession_key(session, after_id=after_id, limit=batch_size)
        if not batch:
            return report
        read = []
        for study_id, study_uid in batch:
            read.append((study_id, study_uid, *read_accession_key(orthanc, study_uid)))
            if progress is not None:
                progress(1)
        counts = {"filled": 0, "without_accession": 0, "not_in_orthanc": 0, "unchanged": 0}
        with session_scope(factory) as session:
            for study_id, study_uid, in_orthanc, key in read:
                if not in_orthanc:
                    outcome = "not_in_orthanc"
                elif key is None:
                    outcome = "without_accession"
                else:
                    outcome = "filled" if repository.fill_accession_key(session, study_id, key) else "unchanged"
                counts[outcome] += 1
                if outcome in ("not_in_orthanc", "without_accession"):
                    report.left_null.append(study_uid)
            record(session, actor, AUDIT_ACTION, "catalog_studies", f"{batch[0][0]}-{batch[-1][0]}",
                   studies=len(batch), **counts)
        for name, value in counts.items():
            setattr(report, name, getattr(report, name) + value)
        logger.info("accession key backfill: %d studies, %s", len(batch), counts)
        after_id = batch[-1][0]
