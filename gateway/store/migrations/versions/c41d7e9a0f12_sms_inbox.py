"""inbound_message as the SMS inbox: sender, text, processing state, dead letters

Revision ID: c41d7e9a0f12
Revises: b3e81c5d2a47
Create Date: 2026-11-25 15:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = 'c41d7e9a0f12'
down_revision: Union[str, None] = 'b3e81c5d2a47'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_PENDING = "processed_at IS NULL AND sender_hash IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('sender_enc', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('body', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    # Everything recorded before the inbox was processed in the transaction that recorded it.
    op.execute("UPDATE inbound_message SET processed_at = received_at")
    op.create_index(
        'ix_inbound_pending_id', 'inbound_message', ['id'],
        sqlite_where=sa.text(_PENDING), postgresql_where=sa.text(_PENDING),
    )
    op.create_index(
        'ix_inbound_pending', 'inbound_message', ['sender_hash', 'id'],
        sqlite_where=sa.text(_PENDING), postgresql_where=sa.text(_PENDING),
    )
    op.create_index(
        'ix_inbound_error', 'inbound_message', ['id'],
        sqlite_where=sa.text('error IS NOT NULL'), postgresql_where=sa.text('error IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_inbound_error', table_name='inbound_message')
    op.drop_index('ix_inbound_pending', table_name='inbound_message')
    op.drop_index('ix_inbound_pending_id', table_name='inbound_message')
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('processed_at')
        batch_op.drop_column('body')
        batch_op.drop_column('sender_enc')
        batch_op.drop_column('sender_hash')
