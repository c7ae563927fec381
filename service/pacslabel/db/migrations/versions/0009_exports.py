"""exports: dataset snapshots, the data-flow log, checksums of source objects

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=96), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('include_test', sa.Boolean(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('manifest', sa.LargeBinary(), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('item_count', sa.Integer(), nullable=False),
    sa.Column('object_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_snapshots_project_id_projects')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_snapshots_created_by_users')),
    sa.ForeignKeyConstraint(['parent_id'], ['snapshots.id'], name=op.f('fk_snapshots_parent_id_snapshots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots')),
    sa.UniqueConstraint('name', name=op.f('uq_snapshots_name')),
    sa.UniqueConstraint('project_id', 'sequence', name='uq_snapshots_project_sequence')
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_created_by'), ['created_by'], unique=False)
    op.create_table('data_flow_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('byte_count', sa.BigInteger(), nullable=True),
    sa.Column('client', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_data_flow_events_user_id_users')),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_data_flow_events_snapshot_id_snapshots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_flow_events'))
    )
    with op.batch_alter_table('data_flow_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_flow_events_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_flow_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_flow_events_snapshot_id'), ['snapshot_id'], unique=False)
    op.create_table('export_object_hashes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('byte_size', sa.Integer(), nullable=False),
    sa.Column('hashed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_object_hashes')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_export_object_hashes_sop_instance_uid'))
    )


def downgrade() -> None:
    op.drop_table('export_object_hashes')
    with op.batch_alter_table('data_flow_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_flow_events_snapshot_id'))
        batch_op.drop_index(batch_op.f('ix_data_flow_events_at'))
        batch_op.drop_index(batch_op.f('ix_data_flow_events_user_id'))
    op.drop_table('data_flow_events')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_created_by'))
        batch_op.drop_index(batch_op.f('ix_snapshots_project_id'))
    op.drop_table('snapshots')
