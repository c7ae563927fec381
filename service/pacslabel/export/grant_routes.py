"""JSON API of test-access grants (admins only): give, revoke and list who may see a project's test split.

``{project_id}`` is the project's numeric id or its slug.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from pacslabel.export import grants
from pacslabel.web.api_contract import INVALID_REQUEST, Reference, Text
from pacslabel.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api/projects", tags=["export"], responses=INVALID_REQUEST)


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Text = Field(min_length=1, max_length=64)
    reason: Text = Field(min_length=1, max_length=grants.MAX_REASON)


@router.post("/{project_id}/test-access", status_code=201)
def grant_test_access(project_id: Reference, body: GrantRequest, session: DbSession,
                      admin: AdminUser) -> dict[str, Any]:
    row = grants.grant_test_access(session, admin, project_id, body.username, body.reason)
    session.commit()  # in force (and the gateway's cached access forgotten) before the answer goes out
    [view] = [v for v in grants.list_test_access(session, admin, project_id) if v.id == row.id]
    return view.as_json()


@router.delete("/{project_id}/test-access/{username}")
def revoke_test_access(project_id: Reference, username: Annotated[Text, Path(max_length=64)], session: DbSession,
                       admin: AdminUser) -> dict[str, Any]:
    row = grants.revoke_test_access(session, admin, project_id, username)
    session.commit()  # sealed again (and the gateway's cached access forgotten) before the answer goes out
    [view] = [v for v in grants.list_test_access(session, admin, project_id, include_revoked=True)
              if v.id == row.id]
    return view.as_json()


@router.get("/{project_id}/test-access")
def list_test_access(project_id: Reference, session: DbSession, admin: AdminUser,
                     include_revoked: bool = False) -> dict[str, Any]:
    views = grants.list_test_access(session, admin, project_id, include_revoked=include_revoked)
    return {"grants": [v.as_json() for v in views]}
