"""ML access: test-split access grants

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('test_access_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('granted_by_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_test_access_grants_project_id_projects')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_test_access_grants_user_id_users')),
    sa.ForeignKeyConstraint(['granted_by_id'], ['users.id'], name=op.f('fk_test_access_grants_granted_by_id_users')),
    sa.ForeignKeyConstraint(['revoked_by_id'], ['users.id'], name=op.f('fk_test_access_grants_revoked_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_test_access_grants'))
    )
    with op.batch_alter_table('test_access_grants', schema=None) as batch_op:
        batch_op.create_index('ix_test_access_grants_project_user', ['project_id', 'user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_test_access_grants_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('test_access_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_test_access_grants_user_id'))
        batch_op.drop_index('ix_test_access_grants_project_user')
    op.drop_table('test_access_grants')
