"""Test-access grants: an admin lets one user see the sealed ``test`` split of one project.

Rows are never deleted: revoking stamps ``revoked_at``, so the table is the history of who could see the
test split and when (the audit log records the same events with their actor).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from pacslabel.db.base import Base, utcnow


class TestAccessGrant(Base):
    __tablename__ = "test_access_grants"
    __table_args__ = (Index("ix_test_access_grants_project_user", "project_id", "user_id"),)
    __test__ = False  # a model, not a pytest test class

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    granted_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(255))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    @property
    def active(self) -> bool:
        return self.revoked_at is None


__all__ = ["TestAccessGrant"]
