"""chat_link_challenge: an SMS code proves the phone before a Telegram chat is bound to its citizen

Revision ID: e7a6c9d1f407
Revises: e3c2e5f7b903
Create Date: 2026-12-04 19:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = 'e7a6c9d1f407'
down_revision: Union[str, None] = 'e3c2e5f7b903'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'chat_link_challenge',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('chat_id', sa.BigInteger(), nullable=False),
        sa.Column('citizen_id', sa.Integer(), nullable=False),
        sa.Column('invitation_id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['citizen_id'], ['citizen.id']),
        sa.ForeignKeyConstraint(['invitation_id'], ['invitation.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('chat_link_challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_link_challenge_chat_id'), ['chat_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_link_challenge_citizen_id'), ['citizen_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_link_challenge_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('chat_link_challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_link_challenge_created_at'))
        batch_op.drop_index(batch_op.f('ix_chat_link_challenge_citizen_id'))
        batch_op.drop_index(batch_op.f('ix_chat_link_challenge_chat_id'))
    op.drop_table('chat_link_challenge')
