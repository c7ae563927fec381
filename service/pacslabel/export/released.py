"""What is released to ML teams: items that have a final label, with their source series and label object.

CONTRACT (shared by the ML access policy and the snapshot/export code; keep the names and fields):

- An item is *released* when it has a row in ``final_labels``. Its release time is ``FinalLabel.updated_at``.
- ``released_items(session, project_id, *, include_test)`` lists them (ordered by item id), leaving out the
  items of the ``test`` split unless ``include_test``.
- ``may_see_test_split(session, user, project_id)`` is True for admins and for users holding an active
  test-access grant on the project (grants are given and revoked by admins, and audited).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from pacslabel.users.models import User


@dataclass(frozen=True)
class LabelObject:
    """The DICOM object (SEG or SR) that is an item's final label."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str  # "SEG" | "SR"
    source: str  # FinalSource value: single_read | consensus | arbitration | ground_truth
    annotation_version_id: int | None  # set when the label is a reader's/arbiter's version
    consensus_id: int | None  # set when the label is a consensus result


@dataclass(frozen=True)
class ReleasedItem:
    item_id: int
    project_id: int
    patient_pseudonym: str
    split: str  # train | validation | test
    study_instance_uid: str
    source_series_uids: tuple[str, ...]  # the item's source image series (never SEG/SR)
    labels: tuple[LabelObject, ...]  # the final label object(s); empty for an SR-less classification GT
    released_at: datetime  # FinalLabel.updated_at


def released_items(session: Session, project_id: int, *, include_test: bool) -> list[ReleasedItem]:
    raise NotImplementedError("implemented by the ML-access work")


def may_see_test_split(session: Session, user: User, project_id: int) -> bool:
    raise NotImplementedError("implemented by the ML-access work")
