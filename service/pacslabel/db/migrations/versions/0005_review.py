"""review: decisions on reads, consensus results, one final label per item

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('review_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('annotation_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_review_decisions_task_id_tasks')),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], name=op.f('fk_review_decisions_reviewer_id_users')),
    sa.ForeignKeyConstraint(['annotation_version_id'], ['annotation_versions.id'],
                            name=op.f('fk_review_decisions_annotation_version_id_annotation_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_decisions'))
    )
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_decisions_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_decisions_reviewer_id'), ['reviewer_id'], unique=False)
    op.create_table('consensus_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('mean_dice', sa.JSON(), nullable=False),
    sa.Column('min_dice', sa.Float(), nullable=False),
    sa.Column('pairs', sa.JSON(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['project_items.id'], name=op.f('fk_consensus_results_item_id_project_items')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consensus_results'))
    )
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consensus_results_item_id'), ['item_id'], unique=False)
    op.create_table('final_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('annotation_version_id', sa.Integer(), nullable=True),
    sa.Column('consensus_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['project_items.id'], name=op.f('fk_final_labels_item_id_project_items')),
    sa.ForeignKeyConstraint(['annotation_version_id'], ['annotation_versions.id'],
                            name=op.f('fk_final_labels_annotation_version_id_annotation_versions')),
    sa.ForeignKeyConstraint(['consensus_id'], ['consensus_results.id'],
                            name=op.f('fk_final_labels_consensus_id_consensus_results')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_final_labels')),
    sa.UniqueConstraint('item_id', name=op.f('uq_final_labels_item_id'))
    )


def downgrade() -> None:
    op.drop_table('final_labels')
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consensus_results_item_id'))
    op.drop_table('consensus_results')
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_decisions_reviewer_id'))
        batch_op.drop_index(batch_op.f('ix_review_decisions_task_id'))
    op.drop_table('review_decisions')
