"""projects and tasks: projects, protocol versions, patient splits, items, clinical context, reading tasks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 22:06:01.882681
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('definition_sha256', sa.String(length=64), nullable=False),
    sa.Column('protocol_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('slug', name=op.f('uq_projects_slug'))
    )
    op.create_table('project_clinical_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('age_bracket', sa.String(length=16), nullable=True),
    sa.Column('sex', sa.String(length=1), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['catalog_patients.id'],
                            name=op.f('fk_project_clinical_records_patient_id_catalog_patients')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                            name=op.f('fk_project_clinical_records_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project_clinical_records')),
    sa.UniqueConstraint('project_id', 'patient_id', name='uq_project_clinical_records_patient')
    )
    with op.batch_alter_table('project_clinical_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_clinical_records_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_clinical_records_project_id'), ['project_id'], unique=False)

    op.create_table('project_patient_splits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=True),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['catalog_patients.id'],
                            name=op.f('fk_project_patient_splits_patient_id_catalog_patients')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                            name=op.f('fk_project_patient_splits_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project_patient_splits')),
    sa.UniqueConstraint('project_id', 'patient_id', name='uq_project_patient_splits_patient')
    )
    with op.batch_alter_table('project_patient_splits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_patient_splits_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_patient_splits_project_id'), ['project_id'], unique=False)

    op.create_table('project_protocol_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.JSON(), nullable=False),
    sa.Column('protocol_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                            name=op.f('fk_project_protocol_versions_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project_protocol_versions')),
    sa.UniqueConstraint('project_id', 'version', name='uq_project_protocol_versions_version')
    )
    with op.batch_alter_table('project_protocol_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_protocol_versions_project_id'), ['project_id'], unique=False)

    op.create_table('project_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('unit_uid', sa.String(length=64), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('series_uids', sa.JSON(), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('order_key', sa.String(length=64), nullable=False),
    sa.Column('needs_review', sa.Boolean(), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['catalog_patients.id'],
                            name=op.f('fk_project_items_patient_id_catalog_patients')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_items_project_id_projects')),
    sa.ForeignKeyConstraint(['study_id'], ['catalog_studies.id'],
                            name=op.f('fk_project_items_study_id_catalog_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project_items')),
    sa.UniqueConstraint('project_id', 'unit_uid', name='uq_project_items_unit')
    )
    with op.batch_alter_table('project_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_items_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_items_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_items_released_at'), ['released_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_items_split'), ['split'], unique=False)
        batch_op.create_index(batch_op.f('ix_project_items_study_id'), ['study_id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('reader_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('protocol_version', sa.Integer(), nullable=False),
    sa.Column('due_after_reads', sa.Integer(), nullable=True),
    sa.Column('assigned_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('skip_reason', sa.String(length=255), nullable=True),
    sa.Column('exclusion_reason', sa.String(length=255), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['project_items.id'], name=op.f('fk_tasks_item_id_project_items')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_tasks_project_id_projects')),
    sa.ForeignKeyConstraint(['reader_id'], ['users.id'], name=op.f('fk_tasks_reader_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('item_id', 'purpose', 'slot', name='uq_tasks_item_purpose_slot'),
    sa.UniqueConstraint('item_id', 'reader_id', 'purpose', name='uq_tasks_item_reader_purpose')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_project_id'), ['project_id'], unique=False)
        batch_op.create_index('ix_tasks_reader_status', ['reader_id', 'status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_reader_status')
        batch_op.drop_index(batch_op.f('ix_tasks_project_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_item_id'))

    op.drop_table('tasks')
    with op.batch_alter_table('project_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_items_study_id'))
        batch_op.drop_index(batch_op.f('ix_project_items_split'))
        batch_op.drop_index(batch_op.f('ix_project_items_released_at'))
        batch_op.drop_index(batch_op.f('ix_project_items_project_id'))
        batch_op.drop_index(batch_op.f('ix_project_items_patient_id'))

    op.drop_table('project_items')
    with op.batch_alter_table('project_protocol_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_protocol_versions_project_id'))

    op.drop_table('project_protocol_versions')
    with op.batch_alter_table('project_patient_splits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_patient_splits_project_id'))
        batch_op.drop_index(batch_op.f('ix_project_patient_splits_patient_id'))

    op.drop_table('project_patient_splits')
    with op.batch_alter_table('project_clinical_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_clinical_records_project_id'))
        batch_op.drop_index(batch_op.f('ix_project_clinical_records_patient_id'))

    op.drop_table('project_clinical_records')
    op.drop_table('projects')
