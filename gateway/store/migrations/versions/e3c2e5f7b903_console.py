"""console: people's accounts, server-side sessions, audit trail

Revision ID: e3c2e5f7b903
Revises: e5e4a7b9d205
Create Date: 2026-12-04 19:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'e3c2e5f7b903'
down_revision: Union[str, None] = 'e5e4a7b9d205'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'console_user',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('login', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=200), nullable=True),
        sa.Column('setup_token_hash', sa.String(length=64), nullable=True),
        sa.Column('setup_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['org_id'], ['organisation.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_console_user_org_id', 'console_user', ['org_id'])
    op.create_index('ix_console_user_login', 'console_user', ['login'], unique=True)
    op.create_index('ix_console_user_setup_token_hash', 'console_user', ['setup_token_hash'])
    op.create_table(
        'console_session',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['console_user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_console_session_user_id', 'console_session', ['user_id'])
    op.create_table(
        'console_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('org_id', sa.Integer(), nullable=True),
        sa.Column('login', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=True),
        sa.Column('event_id', sa.Integer(), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['console_user.id']),
        sa.ForeignKeyConstraint(['org_id'], ['organisation.id']),
        sa.ForeignKeyConstraint(['ticket_id'], ['ticket.id']),
        sa.ForeignKeyConstraint(['event_id'], ['ticket_event.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_console_audit_at', 'console_audit', ['at'])
    op.create_index('ix_console_audit_user_id', 'console_audit', ['user_id'])
    op.create_index('ix_console_audit_org_id', 'console_audit', ['org_id'])
    op.create_index('ix_console_audit_ticket_id', 'console_audit', ['ticket_id'])
    op.create_index('ix_console_audit_kind_login_at', 'console_audit', ['kind', 'login', 'at'])
    op.create_index('ix_console_audit_kind_address_at', 'console_audit', ['kind', 'address', 'at'])


def downgrade() -> None:
    op.drop_table('console_audit')
    op.drop_table('console_session')
    op.drop_table('console_user')
