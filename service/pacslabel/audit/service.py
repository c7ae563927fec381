"""Recording and querying audit events. Details must never hold PHI (only pseudonymous ids)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.audit.models import AuditEvent


def record(session: Session, actor: str | None, action: str, object_type: str | None = None,
           object_id: str | int | None = None, **detail: Any) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, object_type=object_type,
                       object_id=None if object_id is None else str(object_id), detail=detail or None)
    session.add(event)
    return event


def list_events(session: Session, *, actor: str | None = None, action: str | None = None,
                limit: int = 200) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))
