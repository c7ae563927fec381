"""What a reviewer's queue holds: the submitted reads of the projects they review (admins: every active
project), oldest submission first, never their own reads; and what became of an item once its reads were
decided (consensus, arbitration, final label), for the review pages.

The web page and the JSON queue (`review.routes.queue`) take their projects from `reviewable_projects` and
their reads from `repository.submitted_reads`, so the queue's rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from pacslabel.annotations import repository as annotation_repository
from pacslabel.catalog.models import CatalogPatient
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project
from pacslabel.projects.service import may_review, project_spec
from pacslabel.review import repository
from pacslabel.tasks.states import TaskPurpose, TaskStatus
from pacslabel.users.models import Role, User


@dataclass(frozen=True)
class QueueEntry:
    """One submitted read waiting for review, as the queue shows it (pseudonymous: item id and patient
    pseudonym, never an original identifier)."""

    task_id: int
    project_slug: str
    project_name: str
    item_id: int
    patient_pseudonym: str | None
    reader: str | None
    submitted_at: datetime | None
    version_count: int
    note: str | None
    exclusion_reason: str | None
    seg_version: int | None


def reviewable_projects(session: Session, user: User) -> list[Project]:
    """Active projects the user reviews (an admin reviews all)."""
    return [
        p
        for p in project_repository.list_projects(session, active_only=True)
        if user.role == Role.ADMIN.value or may_review(project_spec(p), user)
    ]


def queue_entries(session: Session, user: User) -> list[QueueEntry]:
    projects = {p.id: p for p in reviewable_projects(session, user)}
    entries: list[QueueEntry] = []
    for task in repository.submitted_reads(session, list(projects), user.id):
        item = project_repository.get_item(session, task.item_id)
        patient = session.get(CatalogPatient, item.patient_id) if item is not None and item.patient_id else None
        reader = session.get(User, task.reader_id)
        version = repository.latest_seg(session, task.id)
        project = projects[task.project_id]
        entries.append(
            QueueEntry(
                task_id=task.id,
                project_slug=project.slug,
                project_name=project.name,
                item_id=task.item_id,
                patient_pseudonym=patient.pseudonym if patient is not None else None,
                reader=reader.username if reader is not None else None,
                submitted_at=task.submitted_at,
                version_count=annotation_repository.version_count(session, task.id),
                note=task.note,
                exclusion_reason=task.exclusion_reason,
                seg_version=version.version if version is not None else None,
            )
        )
    return entries


@dataclass(frozen=True)
class ItemOutcome:
    """Where an item stands after its reviews: reads approved of all, and once every read is approved what the
    workflow made of it (`workflow.finish_item`): the consensus, the arbitration task, the final label."""

    reads_total: int
    reads_approved: int
    final_source: str | None
    consensus_method: str | None
    consensus_min_dice: float | None
    agreement_threshold: float | None
    arbitration_task_id: int | None
    arbitration_status: str | None
    arbiter: str | None

    @property
    def finished(self) -> bool:
        return self.reads_total > 0 and self.reads_total == self.reads_approved


def item_outcome(session: Session, item_id: int) -> ItemOutcome:
    reads = repository.slot_reads(session, item_id)
    final = repository.final_label(session, item_id)
    results = repository.consensus_results(session, item_id)
    consensus = results[-1] if results else None
    arbitration = repository.item_task(session, item_id, TaskPurpose.ARBITRATION)
    arbiter = session.get(User, arbitration.reader_id) if arbitration is not None else None
    threshold = None
    item = project_repository.get_item(session, item_id)
    project = project_repository.get_project(session, item.project_id) if item is not None else None
    if project is not None:
        threshold = float(project_spec(project).review.agreement_threshold)
    return ItemOutcome(
        reads_total=len(reads),
        reads_approved=sum(1 for t in reads if t.status == TaskStatus.DONE.value),
        final_source=final.source if final is not None else None,
        consensus_method=consensus.method if consensus is not None else None,
        consensus_min_dice=float(consensus.min_dice) if consensus is not None else None,
        agreement_threshold=threshold,
        arbitration_task_id=arbitration.id if arbitration is not None else None,
        arbitration_status=arbitration.status if arbitration is not None else None,
        arbiter=arbiter.username if arbiter is not None else None,
    )
