"""Tables of fraud detection (Art. 19): what a flag is about, where the detector stands, and the signals it reads.

The flag itself is `gateway.store.models.FraudFlag`. Nothing here is a rating or changes one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, SmallInteger, UniqueConstraint
from sqlmodel import Field, SQLModel


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


class FlagEvaluation(SQLModel, table=True):
    """An evaluation a flag is about. One rule flags an evaluation once: a pass run again adds nothing."""

    __tablename__ = "fraud_flag_evaluation"
    __table_args__ = (UniqueConstraint("rule", "evaluation_id", name="uq_fraud_rule_evaluation"),)
    id: int | None = Field(default=None, primary_key=True)
    flag_id: int = Field(foreign_key="fraud_flag.id", index=True)
    evaluation_id: int = Field(foreign_key="evaluation.id", index=True)
    rule: str = Field(max_length=32)


class FraudCursor(SQLModel, table=True):
    """How far the detector has read a table (evaluation, evaluation_addendum), by id."""

    __tablename__ = "fraud_cursor"
    name: str = Field(primary_key=True, max_length=32)
    last_id: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = _ts()


class StaffContact(SQLModel, table=True):
    """A unit's staff member's number, kept only as its keyed lookup hash (like citizens' numbers)."""

    __tablename__ = "staff_contact"
    __table_args__ = (UniqueConstraint("org_id", "phone_hash", name="uq_staff_contact_org_phone"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    staff_id: str = Field(default="", max_length=64)
    phone_hash: str = Field(max_length=64, index=True)
    created_at: datetime = _ts()


class RatingSignal(SQLModel, table=True):
    """What the rating page saw of a rating: keyed hashes of the client address and of the device cookie,
    and when the page was rendered. Never the address itself."""

    __tablename__ = "rating_signal"
    __table_args__ = (
        Index("ix_rating_signal_device", "device_hash", "created_at"),
        Index("ix_rating_signal_address", "address_hash", "created_at"),
    )
    evaluation_id: int = Field(primary_key=True, foreign_key="evaluation.id")
    address_hash: str | None = Field(default=None, max_length=64)
    device_hash: str | None = Field(default=None, max_length=64)
    opened_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts()


class StaffTally(SQLModel, table=True):
    """Ratings of one window staff member in one month (local time), kept up by the detector as it reads."""

    __tablename__ = "fraud_staff_tally"
    __table_args__ = (
        UniqueConstraint("org_id", "staff_id", "period", name="uq_staff_tally"),
        Index("ix_staff_tally_region_period", "region_code", "period"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id")
    staff_id: str = Field(max_length=64)
    region_code: str = Field(max_length=12)
    period: str = Field(max_length=7)  # YYYY-MM
    n: int = 0
    n5: int = 0


class TextBand(SQLModel, table=True):
    """One LSH band of a free text's MinHash: texts that share a band key are candidates for near-duplicates."""

    __tablename__ = "fraud_text_band"
    __table_args__ = (Index("ix_text_band_key", "band_key", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    band_key: int = Field(sa_column=Column(BigInteger, nullable=False))
    band: int = Field(sa_column=Column(SmallInteger, nullable=False))
    evaluation_id: int = Field(foreign_key="evaluation.id")
    citizen_id: int | None = None
    created_at: datetime = _ts()
