"""statistics roll-ups (day × dimensions × level × status) and bad-review-rate alerts

Revision ID: e2b1d4e6a802
Revises: e7a6c9d1f407
Create Date: 2026-12-04 19:00:00

The roll-ups start empty; a store that already holds ratings fills them with `gateway stats rebuild`.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = 'e2b1d4e6a802'
down_revision: Union[str, None] = 'e7a6c9d1f407'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_S = sqlmodel.sql.sqltypes.AutoString


def _dims(full: bool) -> list[sa.Column]:
    cols = [
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('region_code', _S(length=12), nullable=False),
        sa.Column('unit_org_id', sa.Integer(), nullable=False),
    ]
    if full:
        cols += [
            sa.Column('item_code', _S(length=64), nullable=False),
            sa.Column('staff_id', _S(length=64), nullable=False),
            sa.Column('channel', _S(length=16), nullable=False),
        ]
    cols += [sa.Column('level', sa.Integer(), nullable=False), sa.Column('status', _S(length=16), nullable=False)]
    return cols


def _sums() -> list[sa.Column]:
    return [
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('staff_rated', sa.Integer(), nullable=False),
        sa.Column('staff_level_sum', sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'stats_unit_daily', *_dims(False), *_sums(), sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('day', 'region_code', 'unit_org_id', 'level', 'status', name='uq_stats_unit_daily'),
    )
    op.create_table(
        'stats_unit_monthly', *_dims(False), *_sums(), sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('day', 'region_code', 'unit_org_id', 'level', 'status', name='uq_stats_unit_monthly'),
    )
    op.create_table(
        'stats_daily', *_dims(True), *_sums(), sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('day', 'region_code', 'unit_org_id', 'item_code', 'staff_id', 'channel', 'level', 'status',
                            name='uq_stats_daily'),
    )
    op.create_table(
        'stats_reason_daily', *_dims(True), sa.Column('code', sa.Integer(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False), sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('day', 'region_code', 'unit_org_id', 'item_code', 'staff_id', 'channel', 'level', 'status',
                            'code', name='uq_stats_reason_daily'),
    )
    for table in ('stats_unit_daily', 'stats_unit_monthly', 'stats_daily', 'stats_reason_daily'):
        op.create_index(f'ix_{table}_day', table, ['day'])
        op.create_index(f'ix_{table}_unit_org_id', table, ['unit_org_id'])
    op.create_table(
        'stats_alert',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('unit_org_id', sa.Integer(), nullable=False),
        sa.Column('window_start', sa.Date(), nullable=False),
        sa.Column('window_end', sa.Date(), nullable=False),
        sa.Column('bad', sa.Integer(), nullable=False),
        sa.Column('valid', sa.Integer(), nullable=False),
        sa.Column('baseline_bad', sa.Integer(), nullable=False),
        sa.Column('baseline_valid', sa.Integer(), nullable=False),
        sa.Column('p_value', sa.Float(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('unit_org_id', 'window_end', name='uq_stats_alert_window'),
    )
    op.create_index('ix_stats_alert_unit_org_id', 'stats_alert', ['unit_org_id'])


def downgrade() -> None:
    op.drop_index('ix_stats_alert_unit_org_id', table_name='stats_alert')
    op.drop_table('stats_alert')
    for table in ('stats_reason_daily', 'stats_daily', 'stats_unit_monthly', 'stats_unit_daily'):
        op.drop_index(f'ix_{table}_unit_org_id', table_name=table)
        op.drop_index(f'ix_{table}_day', table_name=table)
        op.drop_table(table)
