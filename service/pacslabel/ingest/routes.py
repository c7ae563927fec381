"""`/api/ingest`: ingest status and quarantine administration, admin only; every action is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pacslabel.ingest import repository, service
from pacslabel.web.api_contract import INVALID_REQUEST, RowId
from pacslabel.web.deps import AdminUser, AppSettings, DbSession

router = APIRouter(prefix="/api/ingest", tags=["ingest"], responses=INVALID_REQUEST)


@router.get("/status")
def ingest_status(session: DbSession, user: AdminUser) -> dict[str, Any]:
    return service.status_report(session)


@router.get("/quarantine")
def quarantine_list(session: DbSession, user: AdminUser, include_resolved: bool = False) -> list[dict[str, Any]]:
    return [service.quarantine_dict(record)
            for record in repository.quarantine_list(session, include_resolved=include_resolved)]


@router.post("/quarantine/{quarantine_id}/release")
def quarantine_release(quarantine_id: RowId, session: DbSession, user: AdminUser,
                       settings: AppSettings) -> dict[str, Any]:
    return service.quarantine_dict(service.release(session, settings, quarantine_id, actor=user.username))


@router.delete("/quarantine/{quarantine_id}")
def quarantine_delete(quarantine_id: RowId, session: DbSession, user: AdminUser,
                      settings: AppSettings) -> dict[str, Any]:
    return service.quarantine_dict(service.delete(session, settings, quarantine_id, actor=user.username))
