"""ingest: queue items, quarantine, catalog of de-identified patients/studies/series/instances

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:57:15.913050
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('first_received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_patients')),
    sa.UniqueConstraint('pseudonym', name=op.f('uq_catalog_patients_pseudonym'))
    )
    op.create_table('ingest_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('spool_name', sa.String(length=255), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_uid_hmac', sa.String(length=64), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('called_ae', sa.String(length=16), nullable=False),
    sa.Column('source_host', sa.String(length=64), nullable=True),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=255), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('orthanc_id', sa.String(length=64), nullable=True),
    sa.Column('deid_sop_instance_uid', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_items'))
    )
    with op.batch_alter_table('ingest_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_items_done_at'), ['done_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_items_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_items_route'), ['route'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_items_sop_uid_hmac'), ['sop_uid_hmac'], unique=False)
        batch_op.create_index('ix_ingest_items_status_not_before', ['status', 'not_before'], unique=False)

    op.create_table('catalog_studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('orthanc_id', sa.String(length=64), nullable=True),
    sa.Column('study_date', sa.String(length=8), nullable=True),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('first_received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['catalog_patients.id'],
                            name=op.f('fk_catalog_studies_patient_id_catalog_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_studies')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_catalog_studies_study_instance_uid'))
    )
    with op.batch_alter_table('catalog_studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_studies_patient_id'), ['patient_id'], unique=False)

    op.create_table('ingest_quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['ingest_items.id'],
                            name=op.f('fk_ingest_quarantine_item_id_ingest_items')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_quarantine'))
    )
    with op.batch_alter_table('ingest_quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_quarantine_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_quarantine_status'), ['status'], unique=False)

    op.create_table('catalog_series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('orthanc_id', sa.String(length=64), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('body_part', sa.String(length=64), nullable=True),
    sa.Column('manufacturer', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=64), nullable=True),
    sa.Column('institution', sa.String(length=64), nullable=True),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=True),
    sa.Column('source_ae', sa.String(length=16), nullable=True),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('instance_count', sa.Integer(), nullable=False),
    sa.Column('first_received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['catalog_studies.id'],
                            name=op.f('fk_catalog_series_study_id_catalog_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_catalog_series_series_instance_uid'))
    )
    with op.batch_alter_table('catalog_series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_series_last_received_at'), ['last_received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_series_route'), ['route'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_series_study_id'), ['study_id'], unique=False)

    op.create_table('catalog_instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('orthanc_id', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['catalog_series.id'],
                            name=op.f('fk_catalog_instances_series_id_catalog_series')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_instances')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_catalog_instances_sop_instance_uid'))
    )
    with op.batch_alter_table('catalog_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_instances_series_id'), ['series_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('catalog_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_instances_series_id'))

    op.drop_table('catalog_instances')
    with op.batch_alter_table('catalog_series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_series_study_id'))
        batch_op.drop_index(batch_op.f('ix_catalog_series_route'))
        batch_op.drop_index(batch_op.f('ix_catalog_series_modality'))
        batch_op.drop_index(batch_op.f('ix_catalog_series_last_received_at'))

    op.drop_table('catalog_series')
    with op.batch_alter_table('ingest_quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_quarantine_status'))
        batch_op.drop_index(batch_op.f('ix_ingest_quarantine_item_id'))

    op.drop_table('ingest_quarantine')
    with op.batch_alter_table('catalog_studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_studies_patient_id'))

    op.drop_table('catalog_studies')
    with op.batch_alter_table('ingest_items', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_items_status_not_before')
        batch_op.drop_index(batch_op.f('ix_ingest_items_sop_uid_hmac'))
        batch_op.drop_index(batch_op.f('ix_ingest_items_route'))
        batch_op.drop_index(batch_op.f('ix_ingest_items_received_at'))
        batch_op.drop_index(batch_op.f('ix_ingest_items_done_at'))

    op.drop_table('ingest_items')
    op.drop_table('catalog_patients')
