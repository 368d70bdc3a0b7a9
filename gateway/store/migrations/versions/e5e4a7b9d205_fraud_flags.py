"""fraud flags: the flag reshaped (rule, evidence, region, ruling), its evaluations, the detector's cursor,
staff contacts, rating-page signals, staff tallies and text bands

Revision ID: e5e4a7b9d205
Revises: e4d3f6a8c104
Create Date: 2026-12-04 19:20:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = "e5e4a7b9d205"
down_revision: Union[str, None] = "e4d3f6a8c104"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_S = sqlmodel.sql.sqltypes.AutoString
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The old fraud_flag was never written to: it is replaced, not migrated.
    with op.batch_alter_table("fraud_flag", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraud_flag_evaluation_id"))
    op.drop_table("fraud_flag")
    op.create_table(
        "fraud_flag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule", _S(length=32), nullable=False),
        sa.Column("subject", _S(length=128), nullable=False),
        sa.Column("region_code", _S(length=12), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("evaluation_count", sa.Integer(), nullable=False),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("ruled_at", _TS, nullable=True),
        sa.Column("ruled_by_org_id", sa.Integer(), nullable=True),
        sa.Column("ruling_note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["ruled_by_org_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fraud_flag_rule", "fraud_flag", ["rule"])
    op.create_index("ix_fraud_flag_region_status", "fraud_flag", ["region_code", "status"])
    op.create_table(
        "fraud_flag_evaluation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flag_id", sa.Integer(), nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("rule", _S(length=32), nullable=False),
        sa.ForeignKeyConstraint(["flag_id"], ["fraud_flag.id"]),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule", "evaluation_id", name="uq_fraud_rule_evaluation"),
    )
    op.create_index("ix_fraud_flag_evaluation_flag_id", "fraud_flag_evaluation", ["flag_id"])
    op.create_index("ix_fraud_flag_evaluation_evaluation_id", "fraud_flag_evaluation", ["evaluation_id"])
    op.create_table(
        "fraud_cursor",
        sa.Column("name", _S(length=32), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "staff_contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", _S(length=64), nullable=False),
        sa.Column("phone_hash", _S(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "phone_hash", name="uq_staff_contact_org_phone"),
    )
    op.create_index("ix_staff_contact_org_id", "staff_contact", ["org_id"])
    op.create_index("ix_staff_contact_phone_hash", "staff_contact", ["phone_hash"])
    op.create_table(
        "rating_signal",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("address_hash", _S(length=64), nullable=True),
        sa.Column("device_hash", _S(length=64), nullable=True),
        sa.Column("opened_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"]),
        sa.PrimaryKeyConstraint("evaluation_id"),
    )
    op.create_index("ix_rating_signal_device", "rating_signal", ["device_hash", "created_at"])
    op.create_index("ix_rating_signal_address", "rating_signal", ["address_hash", "created_at"])
    op.create_table(
        "fraud_staff_tally",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", _S(length=64), nullable=False),
        sa.Column("region_code", _S(length=12), nullable=False),
        sa.Column("period", _S(length=7), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n5", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "staff_id", "period", name="uq_staff_tally"),
    )
    op.create_index("ix_staff_tally_region_period", "fraud_staff_tally", ["region_code", "period"])
    op.create_table(
        "fraud_text_band",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("band_key", sa.BigInteger(), nullable=False),
        sa.Column("band", sa.SmallInteger(), nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_text_band_key", "fraud_text_band", ["band_key", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_text_band_key", table_name="fraud_text_band")
    op.drop_table("fraud_text_band")
    op.drop_index("ix_staff_tally_region_period", table_name="fraud_staff_tally")
    op.drop_table("fraud_staff_tally")
    op.drop_index("ix_rating_signal_address", table_name="rating_signal")
    op.drop_index("ix_rating_signal_device", table_name="rating_signal")
    op.drop_table("rating_signal")
    op.drop_index("ix_staff_contact_phone_hash", table_name="staff_contact")
    op.drop_index("ix_staff_contact_org_id", table_name="staff_contact")
    op.drop_table("staff_contact")
    op.drop_table("fraud_cursor")
    op.drop_index("ix_fraud_flag_evaluation_evaluation_id", table_name="fraud_flag_evaluation")
    op.drop_index("ix_fraud_flag_evaluation_flag_id", table_name="fraud_flag_evaluation")
    op.drop_table("fraud_flag_evaluation")
    op.drop_index("ix_fraud_flag_region_status", table_name="fraud_flag")
    op.drop_index("ix_fraud_flag_rule", table_name="fraud_flag")
    op.drop_table("fraud_flag")
    op.create_table(
        "fraud_flag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", _S(length=32), nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("reviewed_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("fraud_flag", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fraud_flag_evaluation_id"), ["evaluation_id"], unique=False)
