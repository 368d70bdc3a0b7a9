"""upload_record: the feed of evaluation record versions to the provincial platform

Revision ID: e4d3f6a8c104
Revises: c41d7e9a0f12
Create Date: 2026-12-04 19:20:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = 'e4d3f6a8c104'
down_revision: Union[str, None] = 'c41d7e9a0f12'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'upload_record',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('evaluation_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('record_key', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('change', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('level', sa.Integer(), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('solo', sa.Boolean(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('first_sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['evaluation_id'], ['evaluation.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('evaluation_id', 'version', name='uq_upload_evaluation_version'),
    )
    op.create_index('ix_upload_ready', 'upload_record', ['status', 'next_attempt_at'])
    op.create_index(op.f('ix_upload_record_evaluated_at'), 'upload_record', ['evaluated_at'])
    op.create_index(op.f('ix_upload_record_record_key'), 'upload_record', ['record_key'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_upload_record_record_key'), table_name='upload_record')
    op.drop_index(op.f('ix_upload_record_evaluated_at'), table_name='upload_record')
    op.drop_index('ix_upload_ready', table_name='upload_record')
    op.drop_table('upload_record')
