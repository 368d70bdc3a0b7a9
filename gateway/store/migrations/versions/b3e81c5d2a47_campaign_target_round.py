"""campaign_target.round, and one open callback question per ticket and round

Revision ID: b3e81c5d2a47
Revises: f7a2b26ba8b0
Create Date: 2026-11-25 13:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'b3e81c5d2a47'
down_revision: Union[str, None] = 'f7a2b26ba8b0'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_OPEN = "status IN ('pending', 'queued', 'sent', 'delivered')"


def upgrade() -> None:
    with op.batch_alter_table('campaign_target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('round', sa.Integer(), server_default='1', nullable=False))
    op.create_index(
        'uq_target_open_round', 'campaign_target', ['ticket_id', 'round'], unique=True,
        sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN),
    )


def downgrade() -> None:
    op.drop_index('uq_target_open_round', table_name='campaign_target')
    with op.batch_alter_table('campaign_target', schema=None) as batch_op:
        batch_op.drop_column('round')
