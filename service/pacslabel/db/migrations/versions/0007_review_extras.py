"""review extras: task comment threads, ground truth imports, per-reader agreement and the compared method of
a consensus, the accession key of catalog studies (reviewer fixes are annotation versions: no table)

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('task_comments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_comments_task_id_tasks')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_task_comments_author_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_comments'))
    )
    with op.batch_alter_table('task_comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_comments_task_id'), ['task_id'], unique=False)
    op.create_table('ground_truth_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('importer_id', sa.Integer(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_ground_truth_imports_project_id_projects')),
    sa.ForeignKeyConstraint(['importer_id'], ['users.id'], name=op.f('fk_ground_truth_imports_importer_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ground_truth_imports'))
    )
    with op.batch_alter_table('ground_truth_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ground_truth_imports_project_id'), ['project_id'], unique=False)
    op.create_table('ground_truth_answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('question', sa.String(length=64), nullable=False),
    sa.Column('answer', sa.String(length=255), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('key_kind', sa.String(length=16), nullable=False),
    sa.Column('patient_pseudonym', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['import_id'], ['ground_truth_imports.id'],
                            name=op.f('fk_ground_truth_answers_import_id_ground_truth_imports')),
    sa.ForeignKeyConstraint(['item_id'], ['project_items.id'],
                            name=op.f('fk_ground_truth_answers_item_id_project_items')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ground_truth_answers'))
    )
    with op.batch_alter_table('ground_truth_answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ground_truth_answers_import_id'), ['import_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ground_truth_answers_item_id'), ['item_id'], unique=False)
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reader_agreement', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('reader_weights', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('comparison', sa.JSON(), nullable=True))
    with op.batch_alter_table('final_labels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ground_truth_import_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_final_labels_ground_truth_import_id_ground_truth_imports'),
                                    'ground_truth_imports', ['ground_truth_import_id'], ['id'])
    with op.batch_alter_table('catalog_studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accession_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_catalog_studies_accession_key'), ['accession_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('catalog_studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_studies_accession_key'))
        batch_op.drop_column('accession_key')
    with op.batch_alter_table('final_labels', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_final_labels_ground_truth_import_id_ground_truth_imports'),
                                 type_='foreignkey')
        batch_op.drop_column('ground_truth_import_id')
    with op.batch_alter_table('consensus_results', schema=None) as batch_op:
        batch_op.drop_column('comparison')
        batch_op.drop_column('reader_weights')
        batch_op.drop_column('reader_agreement')
    with op.batch_alter_table('ground_truth_answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ground_truth_answers_item_id'))
        batch_op.drop_index(batch_op.f('ix_ground_truth_answers_import_id'))
    op.drop_table('ground_truth_answers')
    with op.batch_alter_table('ground_truth_imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ground_truth_imports_project_id'))
    op.drop_table('ground_truth_imports')
    with op.batch_alter_table('task_comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_comments_task_id'))
    op.drop_table('task_comments')
