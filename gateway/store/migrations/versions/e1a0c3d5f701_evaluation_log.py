"""The tamper-evident evaluation log, its head and the published heads; back-fills existing records

Revision ID: e1a0c3d5f701
Revises: e6f5b8c0e306
Create Date: 2026-12-04 19:00:00
"""

from datetime import datetime, timezone
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "e1a0c3d5f701"
down_revision: Union[str, None] = "e6f5b8c0e306"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Tables whose rows are never changed or removed, not even by SQL that bypasses the application.
APPEND_ONLY = ("evaluation_log", "published_head")
_BACKFILL_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "evaluation_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("kind", "record_id", name="uq_evaluation_log_record"),
    )
    op.create_table(
        "evaluation_log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_evaluation_log_head_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "published_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("place", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq", "place", name="uq_published_head_seq_place"),
    )
    op.create_index("ix_published_head_seq", "published_head", ["seq"], unique=False)
    _protect()
    _backfill()


def _protect() -> None:
    """Art. 19: the log and the published heads refuse UPDATE, DELETE and TRUNCATE."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION append_only()"
            )
    else:  # SQLite has no TRUNCATE; its DELETE without WHERE still fires the row trigger
        for table in APPEND_ONLY:
            for what in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{what.lower()} BEFORE {what} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {what} refused'); END"
                )


def _backfill() -> None:
    """Chain the records written before the log existed, by created_at, then kind, then id."""
    from gateway.audit.log import GENESIS, KIND_ORDER, append

    conn = op.get_bind()
    conn.execute(
        sa.text("INSERT INTO evaluation_log_head (id, seq, hash) VALUES (1, 0, :genesis)"), {"genesis": GENESIS}
    )
    keys = []
    for kind, table in (
        ("evaluation", "evaluation"),
        ("addendum", "evaluation_addendum"),
        ("decision", "evaluation_decision"),
    ):
        rows = conn.execute(sa.text(f"SELECT created_at, id FROM {table}"))
        keys.extend((_utc(created_at), KIND_ORDER[kind], kind, record_id) for created_at, record_id in rows)
    keys.sort()
    at = datetime.now(timezone.utc)
    for start in range(0, len(keys), _BACKFILL_BATCH):
        append(conn, [(kind, record_id, at) for _, _, kind, record_id in keys[start : start + _BACKFILL_BATCH]])


def _utc(value: object) -> datetime:
    # A text() query hands SQLite's stored time back as its text, PostgreSQL's as an aware datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"unexpected created_at {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        op.execute("DROP FUNCTION IF EXISTS append_only()")
    else:
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_index("ix_published_head_seq", table_name="published_head")
    op.drop_table("published_head")
    op.drop_table("evaluation_log_head")
    op.drop_table("evaluation_log")
