"""Tables of the evaluation log: the entries, the head they end at, and the heads that were published."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class EvaluationLogEntry(SQLModel, table=True):
    """One evaluation record, chained to the one before it. Never updated or deleted (Art. 19)."""

    __tablename__ = "evaluation_log"
    # A record is logged once; the pair also lets verify find records that were never logged.
    __table_args__ = (UniqueConstraint("kind", "record_id", name="uq_evaluation_log_record"),)
    seq: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=16)  # evaluation | addendum | decision
    record_id: int = Field(sa_type=BigInteger)
    # The RFC 8785 canonical JSON that was hashed, exactly as hashed.
    record: str = Field(sa_type=Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class EvaluationLogHead(SQLModel, table=True):
    """The one row holding the log's last (seq, hash); appends lock it, which serialises them."""

    __tablename__ = "evaluation_log_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_evaluation_log_head_one_row"),)
    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = Field(sa_type=BigInteger)
    hash: str = Field(max_length=64)


class PublishedHead(SQLModel, table=True):
    """A head shown outside the gateway (the public statistics page, an upload): history cannot be
    rewritten behind it without verify noticing."""

    __tablename__ = "published_head"
    __table_args__ = (UniqueConstraint("seq", "place", name="uq_published_head_seq_place"),)
    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_type=BigInteger, index=True)
    hash: str = Field(max_length=64)
    place: str = Field(max_length=64)  # where it was published, e.g. "public_stats"
    published_at: datetime = Field(sa_type=DateTime(timezone=True))
