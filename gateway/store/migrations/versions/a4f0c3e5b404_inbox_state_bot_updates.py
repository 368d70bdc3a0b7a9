"""The SMS inbox gets an explicit state; the bot's processed update ids move to a ledger of their own

`inbound_message` was both the SMS inbox and the bot's dedup ledger, a row's job and state read from
which columns were empty. Telegram's rows move to `bot_update` (update_id, citizen, when), and the
inbox's rows get `state` (pending, processed, dead, purged), with the partial indexes on it.

Revision ID: a4f0c3e5b404
Revises: e1a0c3d5f701
Create Date: 2026-12-04 23:00:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = "a4f0c3e5b404"
down_revision: Union[str, None] = "e1a0c3d5f701"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_STATES = "state IN ('pending', 'processed', 'dead', 'purged')"
_PENDING = "state = 'pending'"
_DEAD = "state = 'dead'"
_OLD_PENDING = "processed_at IS NULL AND sender_hash IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "bot_update",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["citizen_id"], ["citizen.id"]),
        sa.PrimaryKeyConstraint("update_id"),
    )
    op.execute(
        "INSERT INTO bot_update (update_id, citizen_id, processed_at) "
        "SELECT CAST(provider_id AS BIGINT), citizen_id, COALESCE(processed_at, received_at) "
        "FROM inbound_message WHERE provider = 'telegram'"
    )
    op.execute("DELETE FROM inbound_message WHERE provider = 'telegram'")

    op.drop_index("ix_inbound_error", table_name="inbound_message")
    op.drop_index("ix_inbound_pending", table_name="inbound_message")
    op.drop_index("ix_inbound_pending_id", table_name="inbound_message")
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), server_default="pending", nullable=False)
        )
    # What the empty columns meant: not processed yet; set aside (an error, the number kept); set aside
    # and purged (an error, the number cleared); processed.
    op.execute(
        "UPDATE inbound_message SET state = CASE "
        "WHEN processed_at IS NULL THEN 'pending' "
        "WHEN error IS NOT NULL AND sender_enc IS NOT NULL THEN 'dead' "
        "WHEN error IS NOT NULL THEN 'purged' "
        "ELSE 'processed' END"
    )
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.create_check_constraint("ck_inbound_message_state", _STATES)
    op.create_index(
        "ix_inbound_pending_id", "inbound_message", ["id"],
        sqlite_where=sa.text(_PENDING), postgresql_where=sa.text(_PENDING),
    )
    op.create_index(
        "ix_inbound_pending", "inbound_message", ["sender_hash", "id"],
        sqlite_where=sa.text(_PENDING), postgresql_where=sa.text(_PENDING),
    )
    op.create_index(
        "ix_inbound_dead", "inbound_message", ["id"],
        sqlite_where=sa.text(_DEAD), postgresql_where=sa.text(_DEAD),
    )


def downgrade() -> None:
    op.drop_index("ix_inbound_dead", table_name="inbound_message")
    op.drop_index("ix_inbound_pending", table_name="inbound_message")
    op.drop_index("ix_inbound_pending_id", table_name="inbound_message")
    # processed_at, error and sender_enc were kept in step with the state: dropping it loses nothing.
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_constraint("ck_inbound_message_state", type_="check")
        batch_op.drop_column("state")
    op.create_index(
        "ix_inbound_pending_id", "inbound_message", ["id"],
        sqlite_where=sa.text(_OLD_PENDING), postgresql_where=sa.text(_OLD_PENDING),
    )
    op.create_index(
        "ix_inbound_pending", "inbound_message", ["sender_hash", "id"],
        sqlite_where=sa.text(_OLD_PENDING), postgresql_where=sa.text(_OLD_PENDING),
    )
    op.create_index(
        "ix_inbound_error", "inbound_message", ["id"],
        sqlite_where=sa.text("error IS NOT NULL"), postgresql_where=sa.text("error IS NOT NULL"),
    )
    op.execute(
        "INSERT INTO inbound_message (provider, provider_id, citizen_id, received_at, processed_at, attempts) "
        "SELECT 'telegram', CAST(update_id AS VARCHAR(64)), citizen_id, processed_at, processed_at, 0 FROM bot_update"
    )
    op.drop_table("bot_update")
