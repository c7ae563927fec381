"""annotations: one append-only row per stored SEG/SR version

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotation_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=8), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('author_role', sa.String(length=16), nullable=False),
    sa.Column('predecessor_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('origin', sa.String(length=8), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('byte_size', sa.Integer(), nullable=False),
    sa.Column('repairs', sa.JSON(), nullable=False),
    sa.Column('orthanc_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_annotation_versions_author_id_users')),
    sa.ForeignKeyConstraint(['predecessor_id'], ['annotation_versions.id'],
                            name=op.f('fk_annotation_versions_predecessor_id_annotation_versions')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_annotation_versions_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation_versions')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_annotation_versions_sop_instance_uid')),
    sa.UniqueConstraint('task_id', 'modality', 'version', name='uq_annotation_versions_task_modality_version')
    )
    with op.batch_alter_table('annotation_versions', schema=None) as batch_op:
        batch_op.create_index('ix_annotation_versions_series', ['study_instance_uid', 'series_instance_uid'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_annotation_versions_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_annotation_versions_author_id'), ['author_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('annotation_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotation_versions_author_id'))
        batch_op.drop_index(batch_op.f('ix_annotation_versions_task_id'))
        batch_op.drop_index('ix_annotation_versions_series')
    op.drop_table('annotation_versions')
