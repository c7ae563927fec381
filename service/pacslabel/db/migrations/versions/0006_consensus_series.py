"""consensus results record the series of their SEG (released data is addressed by series)

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series_instance_uid', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.drop_column('series_instance_uid')
