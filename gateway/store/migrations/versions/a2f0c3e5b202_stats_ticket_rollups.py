"""statistics: ticket roll-ups (day or month due × region × unit) for the rectification and callback figures

Revision ID: a2f0c3e5b202
Revises: a4f0c3e5b404
Create Date: 2026-12-04 22:30:00

The roll-ups start empty; a store that already holds tickets fills them with `gateway stats rebuild`.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = 'a2f0c3e5b202'
down_revision: Union[str, None] = 'a4f0c3e5b404'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_TABLES = ('stats_ticket_daily', 'stats_ticket_monthly')
_SUMS = ('due', 'closed', 'on_time', 'called_back', 'answered', 'satisfied', 'resolved', 'working_days')


def upgrade() -> None:
    for table in _TABLES:
        op.create_table(
            table,
            sa.Column('id', sa.Integer(), nullable=False),
            sa.Column('day', sa.Date(), nullable=False),
            sa.Column('region_code', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
            sa.Column('unit_org_id', sa.Integer(), nullable=False),
            *[sa.Column(name, sa.Integer(), nullable=False) for name in _SUMS],
            sa.PrimaryKeyConstraint('id'),
            sa.UniqueConstraint('day', 'region_code', 'unit_org_id', name=f'uq_{table}'),
        )
        op.create_index(f'ix_{table}_day', table, ['day'])
        op.create_index(f'ix_{table}_unit_org_id', table, ['unit_org_id'])


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_index(f'ix_{table}_unit_org_id', table_name=table)
        op.drop_index(f'ix_{table}_day', table_name=table)
        op.drop_table(table)
