"""Monthly rankings of units and window staff (Art. 22) and the analysis behind bad reviews (Art. 23)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.evaluations.reasons import BAD_LEVELS, Catalogue
from gateway.fraud.service import flag_counts
from gateway.stats.models import StatsAlert, StatsDaily, StatsReasonDaily, StatsUnitDaily, StatsUnitMonthly
from gateway.stats.periods import next_month, period_key, previous_month
from gateway.stats.queries import GOOD_LEVELS, Scope, load_labels, ratio, reason_kind
from gateway.stats.rollup import VALID
from gateway.stats.schemas import (
    AlertOut,
    FlagStates,
    ItemCount,
    RankingEntry,
    ReasonCount,
    WeekPoint,
)

Z_95 = 1.959963984540054


def wilson_lower(good: int, n: int, z: float = Z_95) -> float | None:
    """Lower bound of the Wilson score interval of good/n: small samples rank below large ones of equal rate."""
    if n == 0:
        return None
    p = good / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return round((centre - margin) / (1 + z * z / n), 4)


@dataclass
class _Entry:
    unit_org_id: int
    staff: str | None
    valid: int
    good: int


async def _month_entries(session: AsyncSession, *, month: date, kind: str, scope: Scope) -> list[_Entry]:
    table: Any = StatsDaily if kind == "staff" else StatsUnitMonthly  # a unit's whole month: one row per level
    keys = [table.unit_org_id] + ([table.staff_id] if kind == "staff" else [])
    good = func.sum(case((col(table.level).in_(GOOD_LEVELS), table.n), else_=0))
    stmt = (
        select(*keys, func.sum(table.n), good)  # type: ignore[call-overload]  # sqlmodel's overloads take no *columns
        .where(
            table.day >= month,
            table.day < next_month(month),
            table.status == VALID,
            table.level > 0,
            scope.clause(table.region_code, table.unit_org_id),
        )
        .group_by(*keys)
    )
    if kind == "staff":
        stmt = stmt.where(table.staff_id != "")
    out = []
    for row in (await session.exec(stmt)).all():
        if kind == "staff":
            unit_id, staff, n, g = row
        else:
            (unit_id, n, g), staff = row, None
        out.append(_Entry(unit_id, staff, int(n or 0), int(g or 0)))
    return out


def _bottom(entries: list[_Entry], min_sample: int) -> tuple[list[_Entry], set[tuple[int, str | None]]]:
    ranked = sorted(
        (e for e in entries if e.valid >= min_sample),
        key=lambda e: (-(wilson_lower(e.good, e.valid) or 0.0), -e.valid, e.unit_org_id, e.staff or ""),
    )
    # The bottom tenth: the last ⌊n/10⌋ ranked entries (none while fewer than ten are ranked).
    tail = len(ranked) // 10
    bottom = {(e.unit_org_id, e.staff) for e in ranked[len(ranked) - tail :]} if tail else set()
    return ranked, bottom


async def rankings(
    session: AsyncSession, *, month: date, kind: str, min_sample: int, scope: Scope
) -> list[RankingEntry]:
    """Ranked entries first (by the Wilson lower bound of 好评率), then those with too small a sample."""
    entries = await _month_entries(session, month=month, kind=kind, scope=scope)
    ranked, bottom = _bottom(entries, min_sample)
    _, before = _bottom(await _month_entries(session, month=previous_month(month), kind=kind, scope=scope), min_sample)
    labels = await load_labels(session)
    out: list[RankingEntry] = []
    for position, e in enumerate(ranked, start=1):
        key = (e.unit_org_id, e.staff)
        out.append(_entry(e, labels, rank=position, bottom=key in bottom, consecutive=key in bottom and key in before))
    for e in sorted(
        (e for e in entries if e.valid < min_sample), key=lambda e: (-e.valid, e.unit_org_id, e.staff or "")
    ):
        out.append(_entry(e, labels, rank=None, bottom=False, consecutive=False))
    return out


def _entry(e: _Entry, labels: Any, *, rank: int | None, bottom: bool, consecutive: bool) -> RankingEntry:
    return RankingEntry(
        rank=rank,
        unit=labels.org_code.get(e.unit_org_id, str(e.unit_org_id)),
        unit_name=labels.org_name.get(e.unit_org_id, ""),
        staff=e.staff,
        valid=e.valid,
        good=e.good,
        good_rate=ratio(e.good, e.valid),
        wilson_lower=wilson_lower(e.good, e.valid),
        sample="ok" if rank is not None else "样本不足",
        bottom_tenth=bottom,
        consecutive_bottom=consecutive,
    )


# --- analysis (Art. 23) -------------------------------------------------------------------------------


async def top_reasons(
    session: AsyncSession, *, start: date, end: date, scope: Scope, catalogue: Catalogue, limit: int
) -> list[ReasonCount]:
    """The reasons most often given with valid bad reviews."""
    t: Any = StatsReasonDaily
    stmt = (
        select(t.code, func.sum(t.n).label("n"))
        .where(
            t.day >= start,
            t.day <= end,
            t.status == VALID,
            col(t.level).in_(BAD_LEVELS),
            scope.clause(t.region_code, t.unit_org_id),
        )
        .group_by(t.code)
        .order_by(func.sum(t.n).desc(), t.code)
        .limit(limit)
    )
    out = []
    for code, n in (await session.exec(stmt)).all():
        reason = catalogue.get(int(code))
        out.append(
            ReasonCount(
                code=int(code),
                label=reason.label if reason else str(code),
                kind=reason_kind(catalogue, int(code)),
                n=int(n),
            )
        )
    return out


async def top_items(session: AsyncSession, *, start: date, end: date, scope: Scope, limit: int) -> list[ItemCount]:
    """The service items with the most valid bad reviews."""
    t: Any = StatsDaily
    stmt = (
        select(t.item_code, func.sum(t.n))
        .where(
            t.day >= start,
            t.day <= end,
            t.status == VALID,
            col(t.level).in_(BAD_LEVELS),
            scope.clause(t.region_code, t.unit_org_id),
        )
        .group_by(t.item_code)
        .order_by(func.sum(t.n).desc(), t.item_code)
        .limit(limit)
    )
    rows = (await session.exec(stmt)).all()
    labels = await load_labels(session, items={r[0] for r in rows})
    return [ItemCount(item_code=code, item_name=labels.item_name.get(code, code), n=int(n)) for code, n in rows]


async def weekly(session: AsyncSession, *, start: date, end: date, scope: Scope) -> list[WeekPoint]:
    """Valid evaluations and bad reviews per ISO week."""
    t: Any = StatsUnitDaily
    stmt = (
        select(t.day, t.level, func.sum(t.n))
        .where(t.day >= start, t.day <= end, t.status == VALID, t.level > 0, scope.clause(t.region_code, t.unit_org_id))
        .group_by(t.day, t.level)
    )
    valid: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    day = start
    while day <= end:  # every week of the range appears, also an empty one
        valid[period_key("week", day)] += 0
        day += timedelta(days=7 if day.weekday() == 0 else 7 - day.weekday())
    valid[period_key("week", end)] += 0
    for d, level, n in (await session.exec(stmt)).all():
        week = period_key("week", d if isinstance(d, date) else date.fromisoformat(str(d)[:10]))
        valid[week] += int(n)
        if level in BAD_LEVELS:
            bad[week] += int(n)
    return [WeekPoint(week=w, valid=valid[w], bad=bad[w], bad_rate=ratio(bad[w], valid[w])) for w in sorted(valid)]


async def recent_alerts(session: AsyncSession, *, start: date, end: date, scope: Scope) -> list[AlertOut]:
    labels = await load_labels(session)
    stmt = (
        select(StatsAlert)
        .where(StatsAlert.window_end >= start, StatsAlert.window_end <= end)
        .order_by(col(StatsAlert.window_end).desc(), col(StatsAlert.id))
    )
    unit_regions = await _unit_regions(session)
    out = []
    for a in (await session.exec(stmt)).all():
        if not scope.covers(unit_regions.get(a.unit_org_id, ""), a.unit_org_id):
            continue
        out.append(
            AlertOut(
                unit=labels.org_code.get(a.unit_org_id, ""),
                unit_name=labels.org_name.get(a.unit_org_id, ""),
                window_start=a.window_start,
                window_end=a.window_end,
                bad=a.bad,
                valid=a.valid,
                baseline_bad=a.baseline_bad,
                baseline_valid=a.baseline_valid,
                p_value=a.p_value,
            )
        )
    return out


async def _unit_regions(session: AsyncSession) -> dict[int, str]:
    from gateway.store.models import Organisation

    return {o.id: o.region_code for o in (await session.exec(select(Organisation))).all()}  # type: ignore[misc]


async def flag_states(
    session: AsyncSession, *, start: date, end: date, scope: Scope, tz: ZoneInfo
) -> FlagStates | None:
    """The evaluations rated on the local days start … end that fraud flags hold, by state, within an approval
    department's jurisdiction (or everywhere for the operator); None for a unit, to which flags are not shown."""
    if scope.unit_org_id is not None:
        return None
    counts = await flag_counts(
        session,
        start=datetime.combine(start, time(0), tzinfo=tz).astimezone(timezone.utc),
        end=datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz).astimezone(timezone.utc),
        region_prefix=scope.region_prefix or scope.region,
    )
    return FlagStates(open=counts.open, confirmed=counts.confirmed, dismissed=counts.dismissed)
