"""outbound_message without a citizen: overdue reminders to the department webhook go through the outbox

Revision ID: e6f5b8c0e306
Revises: e2b1d4e6a802
Create Date: 2026-12-04 19:30:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'e6f5b8c0e306'
down_revision: Union[str, None] = 'e2b1d4e6a802'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # On SQLite this rebuilds the table: gateway.store.migrate runs it with foreign keys off, then checks them.
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.alter_column('citizen_id', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # Reminders have no citizen and no place in the older schema.
    op.execute(
        "DELETE FROM delivery_attempt WHERE message_id IN (SELECT id FROM outbound_message WHERE citizen_id IS NULL)"
    )
    op.execute("DELETE FROM outbound_message WHERE citizen_id IS NULL")
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.alter_column('citizen_id', existing_type=sa.Integer(), nullable=False)
