"""Roll-up tables of the statistics and the alerts they raised.

Each roll-up row counts evaluations (level 1-5) or invitations (level 0, status `invited`) of one local
day (Asia/Shanghai) under one combination of dimensions. `status` is `valid`, or the kind of the first
ruling (evaluation_decision) on the evaluation: a ruled evaluation moves from `valid` to its kind, it is
never dropped. The tables differ only in how many dimensions they keep: a query reads the smallest one
that has every dimension it filters or groups by. They are maintained in the writer's transaction
(`gateway.stats.rollup`), so they always equal a recount of the raw rows.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


class _UnitDay(SQLModel):
    """The dimensions every roll-up has: the local day (or a month's first day), the region and the unit."""

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(index=True)
    region_code: str = Field(max_length=12)
    unit_org_id: int = Field(index=True)


class _LevelCounts(_UnitDay):
    """Evaluations of one level and status: how many, how many rated the staff member, and the staff levels' sum."""

    level: int
    status: str = Field(max_length=16)
    n: int = 0
    staff_rated: int = 0
    staff_level_sum: int = 0


class _TicketCounts(_UnitDay):
    """The tickets falling due: how many, closed, closed on time, called back, answering the callback,
    satisfied, resolved, and the working days from receipt to resolution summed over the resolved."""

    due: int = 0
    closed: int = 0
    on_time: int = 0
    called_back: int = 0
    answered: int = 0
    satisfied: int = 0
    resolved: int = 0
    working_days: int = 0


class StatsUnitDaily(_LevelCounts, table=True):
    """Day × region × unit × level × status: the city, county and unit figures."""

    __tablename__ = "stats_unit_daily"
    __table_args__ = (
        UniqueConstraint("day", "region_code", "unit_org_id", "level", "status", name="uq_stats_unit_daily"),
    )


class StatsUnitMonthly(_LevelCounts, table=True):
    """Month × region × unit × level × status (`day` is the month's first day): long ranges read whole months here."""

    __tablename__ = "stats_unit_monthly"
    __table_args__ = (
        UniqueConstraint("day", "region_code", "unit_org_id", "level", "status", name="uq_stats_unit_monthly"),
    )


class StatsDaily(_LevelCounts, table=True):
    """Day × region × unit × item × staff member × channel × level × status."""

    __tablename__ = "stats_daily"
    __table_args__ = (
        UniqueConstraint(
            "day",
            "region_code",
            "unit_org_id",
            "item_code",
            "staff_id",
            "channel",
            "level",
            "status",
            name="uq_stats_daily",
        ),
    )
    item_code: str = Field(max_length=64)
    staff_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)


class StatsReasonDaily(_UnitDay, table=True):
    """Evaluations carrying a reason code (given with the rating or in a later addendum), per day × … × code."""

    __tablename__ = "stats_reason_daily"
    __table_args__ = (
        UniqueConstraint(
            "day",
            "region_code",
            "unit_org_id",
            "item_code",
            "staff_id",
            "channel",
            "level",
            "status",
            "code",
            name="uq_stats_reason_daily",
        ),
    )
    item_code: str = Field(max_length=64)
    staff_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    level: int
    status: str = Field(max_length=16)
    code: int
    n: int = 0


class StatsTicketDaily(_TicketCounts, table=True):
    """Day the ticket falls due × region × unit (the rated invitation's): the rectification and callback figures
    of the valid bad reviews. A ruled evaluation's ticket leaves it. `working_days` sums, over the resolved
    tickets, the working days from receipt to resolution, counted with the working calendar when written."""

    __tablename__ = "stats_ticket_daily"
    __table_args__ = (UniqueConstraint("day", "region_code", "unit_org_id", name="uq_stats_ticket_daily"),)


class StatsTicketMonthly(_TicketCounts, table=True):
    """The ticket figures per month the tickets fall due (`day` is the month's first day) × region × unit."""

    __tablename__ = "stats_ticket_monthly"
    __table_args__ = (UniqueConstraint("day", "region_code", "unit_org_id", name="uq_stats_ticket_monthly"),)


class StatsAlert(SQLModel, table=True):
    """A unit's 差评率 found clearly above its own baseline (Art. 23): raised once per unit and window."""

    __tablename__ = "stats_alert"
    __table_args__ = (UniqueConstraint("unit_org_id", "window_end", name="uq_stats_alert_window"),)
    id: int | None = Field(default=None, primary_key=True)
    unit_org_id: int = Field(index=True)
    window_start: date
    window_end: date
    bad: int
    valid: int
    baseline_bad: int
    baseline_valid: int
    p_value: float
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    attempts: int = 0
