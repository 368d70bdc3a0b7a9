"""The indicators, from the roll-ups and the tickets: the one source of every figure (department API,
public page, demo). Formulas: docs/statistics.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Date,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    true,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import Grouping
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.evaluations.reasons import BAD_LEVELS, Catalogue
from gateway.orgs import Caller
from gateway.stats.errors import InvalidStatsQuery
from gateway.stats.models import (
    StatsDaily,
    StatsReasonDaily,
    StatsTicketDaily,
    StatsTicketMonthly,
    StatsUnitDaily,
    StatsUnitMonthly,
)
from gateway.stats.periods import next_month, period_bounds, period_key
from gateway.stats.rollup import (
    ANSWERED,
    CALLED_BACK,
    CLOSED_COUNTED,
    INVITED,
    TICKET_SUMS,
    VALID,
    working_days_between,
)
from gateway.stats.schemas import GROUPS, MAX_RANGE_DAYS, PERIODS, Indicators, StatsQuery
from gateway.store.models import (
    APPROVAL_KINDS,
    Evaluation,
    EvaluationDecision,
    Invitation,
    Organisation,
    ServiceCase,
    Ticket,
)
from gateway.tickets.calendar import WorkingCalendar

GOOD_LEVELS = (3, 4, 5)
SATISFIED_LEVELS = (4, 5)

_case = aliased(ServiceCase)  # a batch's first case, looked up beside the joined one


@dataclass(frozen=True)
class Scope:
    """Whose figures: the same jurisdiction rule as the ticket and evaluation lists (gateway.orgs)."""

    label: str
    region_prefix: str | None = None  # a city bureau: every region of its city
    region: str | None = None  # a county department: its county
    unit_org_id: int | None = None  # a unit or platform builder: its own services

    @classmethod
    def of(cls, caller: Caller) -> Scope:
        if caller.kind == "operator":
            return cls(caller.code)
        if caller.kind == "city_bureau":
            return cls(caller.code, region_prefix=caller.region_code[:4])
        if caller.kind == "county_dept":
            return cls(caller.code, region=caller.region_code)
        return cls(caller.code, unit_org_id=caller.org_id)

    def clause(self, region_col: Any, unit_col: Any) -> ColumnElement[bool]:
        if self.region_prefix is not None:
            return region_col.startswith(self.region_prefix)
        if self.region is not None:
            return region_col == self.region
        if self.unit_org_id is not None:
            return unit_col == self.unit_org_id
        return true()

    def covers(self, region_code: str, unit_org_id: int | None = None) -> bool:
        if self.region_prefix is not None:
            return region_code.startswith(self.region_prefix)
        if self.region is not None:
            return region_code == self.region
        if self.unit_org_id is not None:
            return unit_org_id == self.unit_org_id
        return True


PUBLIC = Scope("public")


@dataclass(frozen=True)
class Selection:
    """A checked StatsQuery: local days, resolved organisations, the grouping."""

    start: date
    end: date
    group_by: tuple[str, ...] = ()
    region: str | None = None
    unit_org_id: int | None = None
    item: str | None = None
    staff: str | None = None
    channel: str | None = None
    reasons: tuple[int, ...] | None = None  # a reason filter (code or kind) as codes

    @property
    def by_reason(self) -> bool:
        return self.reasons is not None or bool({"reason", "reason_kind"} & set(self.group_by))

    @property
    def by_channel(self) -> bool:
        return self.channel is not None or "channel" in self.group_by


EARLIEST_DAY, LATEST_DAY = date(2000, 1, 1), date(2099, 12, 31)


def check_day(day: date | None, field: str) -> None:
    if day is not None and not EARLIEST_DAY <= day <= LATEST_DAY:
        raise InvalidStatsQuery(f"{field} must lie between {EARLIEST_DAY} and {LATEST_DAY}", field=field)


def check_range(start: date | None, end: date | None, *, today: date, default_days: int) -> tuple[date, date]:
    """A date range: both or neither of from/to, not reversed, at most three years."""
    check_day(start, "from")
    check_day(end, "to")
    if (start is None) != (end is None):
        raise InvalidStatsQuery("give both from and to, or neither", field="to" if end is None else "from")
    if start is None or end is None:
        return today - timedelta(days=default_days - 1), today
    if end < start:
        raise InvalidStatsQuery(f"to ({end}) is before from ({start})", field="to")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidStatsQuery("a range covers at most 3 years", field="to")
    return start, end


async def select_figures(
    session: AsyncSession, query: StatsQuery, *, scope: Scope, today: date, catalogue: Catalogue
) -> Selection:
    """Check a query against the store and the caller's jurisdiction; a fault names its field (422)."""
    if query.from_ is not None or query.to is not None:
        if query.period is not None or query.date is not None:
            raise InvalidStatsQuery("use either period/date or from/to", field="period" if query.period else "date")
        start, end = check_range(query.from_, query.to, today=today, default_days=1)
    else:
        check_day(query.date, "date")
        start, end = period_bounds(query.period or "month", query.date or today)
    group_by: tuple[str, ...] = ()
    if query.group_by:
        parts = query.group_by.split(",")
        for part in parts:
            if part not in GROUPS:
                raise InvalidStatsQuery(f"cannot group by {part!r}; choose from {', '.join(GROUPS)}", field="group_by")
        if len(set(parts)) != len(parts):
            raise InvalidStatsQuery("a dimension is named twice", field="group_by")
        if len([p for p in parts if p in PERIODS]) > 1:
            raise InvalidStatsQuery("group by one period at most", field="group_by")
        if {"reason", "reason_kind"} <= set(parts):
            raise InvalidStatsQuery("group by reason or reason_kind, not both", field="group_by")
        group_by = tuple(parts)
    region = query.region
    if region is not None:
        known = (await session.exec(select(Organisation.id).where(Organisation.region_code == region).limit(1))).first()
        if known is None or not scope.covers(region, scope.unit_org_id):
            raise InvalidStatsQuery(f"region {region} is unknown or outside your jurisdiction", field="region")
    if query.approval is not None:
        approval = (await session.exec(select(Organisation).where(Organisation.code == query.approval))).first()
        if (
            approval is None
            or approval.kind not in APPROVAL_KINDS
            or not scope.covers(approval.region_code, scope.unit_org_id)
        ):
            raise InvalidStatsQuery(
                f"approval {query.approval!r} is not an approval department in your jurisdiction", field="approval"
            )
        if region is not None and region != approval.region_code:
            raise InvalidStatsQuery("region lies outside that approval department's region", field="region")
        region = approval.region_code  # the approval department of a level handles that region's services (Art. 14)
    unit_org_id = None
    if query.unit is not None:
        unit = (await session.exec(select(Organisation).where(Organisation.code == query.unit))).first()
        if unit is None or not scope.covers(unit.region_code, unit.id):
            raise InvalidStatsQuery(f"unit {query.unit!r} is unknown or outside your jurisdiction", field="unit")
        unit_org_id = unit.id
    reasons: tuple[int, ...] | None = None
    if query.reason is not None:
        if catalogue.get(query.reason) is None:
            raise InvalidStatsQuery(f"reason code {query.reason} is not in the catalogue", field="reason")
        reasons = (query.reason,)
    if query.reason_kind is not None:
        kinds = [code for code in all_codes(catalogue) if reason_kind(catalogue, code) == query.reason_kind]
        reasons = tuple(c for c in kinds if reasons is None or c in reasons)
    return Selection(
        start=start,
        end=end,
        group_by=group_by,
        region=region,
        unit_org_id=unit_org_id,
        item=query.item,
        staff=query.staff,
        channel=query.channel,
        reasons=reasons,
    )


def all_codes(catalogue: Catalogue) -> list[int]:
    return sorted(r.code for level in range(1, 6) for r in catalogue.for_level(level))


def reason_kind(catalogue: Catalogue, code: int) -> str:
    reason = catalogue.get(code)
    if reason is None:
        return "handling"
    return "platform" if reason.platform else "staff" if reason.staff else "handling"


# --- counting ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    levels: Counter[int] = field(default_factory=Counter)
    not_counted: Counter[str] = field(default_factory=Counter)
    invited: int = 0
    staff_rated: int = 0
    staff_level_sum: int = 0
    tickets: Counter[str] = field(default_factory=Counter)
    working_days: int = 0

    def add(self, other: Tally) -> None:
        self.levels.update(other.levels)
        self.not_counted.update(other.not_counted)
        self.invited += other.invited
        self.staff_rated += other.staff_rated
        self.staff_level_sum += other.staff_level_sum
        self.tickets.update(other.tickets)
        self.working_days += other.working_days

    def indicators(self, *, invitations_known: bool, tickets_known: bool) -> Indicators:
        valid = sum(self.levels[level] for level in range(1, 6))
        ruled = sum(self.not_counted.values())
        t = self.tickets
        return Indicators(
            counts={str(level): self.levels[level] for level in range(1, 6)},
            valid=valid,
            not_counted=dict(sorted(self.not_counted.items())),
            invited=self.invited if invitations_known else None,
            participation_rate=ratio(valid + ruled, self.invited) if invitations_known else None,
            good_rate=ratio(sum(self.levels[x] for x in GOOD_LEVELS), valid),
            bad_rate=ratio(sum(self.levels[x] for x in BAD_LEVELS), valid),
            satisfied_rate=ratio(sum(self.levels[x] for x in SATISFIED_LEVELS), valid),
            satisfaction_mean=ratio(sum(level * n for level, n in self.levels.items()), valid, digits=3),
            satisfaction_score=(
                round(20 * sum(level * n for level, n in self.levels.items()) / valid, 1) if valid else None
            ),
            staff_rated=self.staff_rated,
            staff_satisfaction_mean=ratio(self.staff_level_sum, self.staff_rated, digits=3),
            tickets_due=t["due"] if tickets_known else None,
            tickets_closed=t["closed"] if tickets_known else None,
            rectification_rate=ratio(t["closed"], t["due"]) if tickets_known else None,
            closed_on_time=t["on_time"] if tickets_known else None,
            on_time_rate=ratio(t["on_time"], t["closed"]) if tickets_known else None,
            tickets_resolved=t["resolved"] if tickets_known else None,
            called_back=t["called_back"] if tickets_known else None,
            callback_rate=ratio(t["called_back"], t["resolved"]) if tickets_known else None,
            callback_answered=t["answered"] if tickets_known else None,
            callback_satisfied=t["satisfied"] if tickets_known else None,
            callback_satisfaction_rate=ratio(t["satisfied"], t["answered"]) if tickets_known else None,
            mean_working_days_to_rectify=ratio(self.working_days, t["resolved"], digits=2) if tickets_known else None,
        )


def ratio(numerator: int, denominator: int, *, digits: int = 4) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


GroupKey = tuple[tuple[str, Any], ...]


@dataclass
class Labels:
    """Codes and names for the organisations and items in a result."""

    org_code: dict[int, str] = field(default_factory=dict)
    org_name: dict[int, str] = field(default_factory=dict)
    approval_of_region: dict[str, tuple[str, str]] = field(default_factory=dict)  # region → (code, name)
    item_name: dict[str, str] = field(default_factory=dict)

    def region_name(self, region: str) -> str:
        name = self.approval_of_region.get(region, ("", region))[1]
        for suffix in ("行政审批服务局", "行政审批部门", "行政审批局"):
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return name


async def load_labels(session: AsyncSession, *, items: set[str] | None = None) -> Labels:
    labels = Labels()
    # Plain rows, no ORM objects (sqlmodel's select is typed for at most four columns; this one takes five).
    orgs = select(  # type: ignore[call-overload]
        Organisation.id, Organisation.code, Organisation.name, Organisation.kind, Organisation.region_code
    )
    for org_id, code, name, kind, region_code in (await session.exec(orgs)).all():
        labels.org_code[org_id] = code
        labels.org_name[org_id] = name
        if kind in APPROVAL_KINDS:
            labels.approval_of_region[region_code] = (code, name)
    if items:
        rows = await session.exec(
            select(ServiceCase.item_code, func.max(ServiceCase.item_name))
            .where(col(ServiceCase.item_code).in_(items))
            .group_by(ServiceCase.item_code)
        )
        labels.item_name = {code: name for code, name in rows.all()}
    return labels


@dataclass
class Figures:
    """A computed answer: the total and one tally per group, with what the tallies can tell."""

    selection: Selection
    total: Tally
    groups: dict[GroupKey, Tally]
    labels: Labels
    invitations_known: bool
    tickets_known: bool
    _ids: dict[Any, int] = field(default_factory=dict, repr=False)  # org code → id, for the labels

    def indicators(self, tally: Tally) -> Indicators:
        return tally.indicators(invitations_known=self.invitations_known, tickets_known=self.tickets_known)

    def label(self, key: GroupKey) -> dict[str, str]:
        out = {}
        for dim, value in key:
            if dim == "unit":
                out[dim] = self.labels.org_name.get(self._org_id(value), str(value))
            elif dim == "region":
                out[dim] = self.labels.region_name(str(value))
            elif dim == "approval":
                out[dim] = next((n for c, n in self.labels.approval_of_region.values() if c == value), str(value))
            elif dim == "item":
                out[dim] = self.labels.item_name.get(str(value), str(value))
            else:
                out[dim] = str(value)
        return out

    def folded(self, dim: str) -> Figures:
        """The same figures grouped by one of this grouping's dimensions: each group the sum of its parts."""
        groups: dict[GroupKey, Tally] = {}
        for key, tally in self.groups.items():
            groups.setdefault(tuple((d, v) for d, v in key if d == dim), Tally()).add(tally)
        selection = replace(self.selection, group_by=(dim,))
        return replace(self, selection=selection, groups=groups)

    def _org_id(self, code: Any) -> int:
        if len(self._ids) != len(self.labels.org_code):
            self._ids.update((c, i) for i, c in self.labels.org_code.items())
        return self._ids.get(code, -1)


def _local_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


async def compute(
    session: AsyncSession,
    selection: Selection,
    *,
    scope: Scope,
    calendar: WorkingCalendar,
    catalogue: Catalogue,
    tickets: bool = True,
) -> Figures:
    """Count the selection: evaluations from the roll-ups, rectification and callbacks from the tickets."""
    sel = selection
    by_reason = sel.by_reason
    needs_full = (
        by_reason
        or sel.item is not None
        or sel.staff is not None
        or sel.channel is not None
        or bool({"item", "staff", "channel"} & set(sel.group_by))
    )
    table: Any = StatsReasonDaily if by_reason else StatsDaily if needs_full else StatsUnitDaily
    dims = _raw_dims(sel.group_by)
    rows: list[Any] = []
    parts = [(table, sel.start, sel.end)]
    if table is StatsUnitDaily and not {"day", "week"} & set(sel.group_by):
        parts = _month_parts(sel.start, sel.end)
    for part_table, low, high in parts:
        rows.extend(await _rollup_rows(session, part_table, low, high, sel=sel, dims=dims, scope=scope))
    items = {r[dims.index("item_code")] for r in rows} if "item_code" in dims else set()
    labels = await load_labels(session, items=items)
    keyer = _keyer(sel.group_by, dims, labels, catalogue)
    total = Tally()
    groups: dict[GroupKey, Tally] = {}
    for row in rows:
        level, status, n = row[len(dims)], row[len(dims) + 1], int(row[len(dims) + 2] or 0)
        staff_rated = int(row[len(dims) + 3] or 0) if len(row) > len(dims) + 3 else 0
        staff_sum = int(row[len(dims) + 4] or 0) if len(row) > len(dims) + 3 else 0
        targets = [total]
        if sel.group_by:
            targets.append(groups.setdefault(keyer(row), Tally()))
        for tally in targets:
            if status == INVITED:
                tally.invited += n
            elif status == VALID:
                tally.levels[level] += n
                tally.staff_rated += staff_rated
                tally.staff_level_sum += staff_sum
            else:
                tally.not_counted[status] += n
    if by_reason and sel.reasons is None:
        # Grouped by reason: a group counts the evaluations carrying that reason, and the total counts each
        # evaluation once, from the table without reasons (an evaluation with two reasons is one evaluation).
        total = (
            await compute(
                session, replace(sel, group_by=()), scope=scope, calendar=calendar, catalogue=catalogue, tickets=False
            )
        ).total
    tickets_known = tickets and not by_reason
    if tickets_known and not needs_full:
        _add_ticket_rows(
            await _ticket_rollup_rows(session, sel, dims=dims, scope=scope), sel, dims, total, groups, keyer
        )
    elif tickets_known:
        await _count_tickets(
            session,
            sel,
            scope=scope,
            calendar=calendar,
            labels=labels,
            total=total,
            groups=groups,
            keyer=keyer,
            dims=dims,
        )
    invitations_known = not by_reason and not sel.by_channel
    return Figures(sel, total, groups, labels, invitations_known, tickets_known)


def _month_parts(
    start: date, end: date, daily: Any = StatsUnitDaily, monthly: Any = StatsUnitMonthly
) -> list[tuple[Any, date, date]]:
    """The range as daily edges and whole months in between: a year reads 12 monthly rows per unit, not 365."""
    first_full = start if start.day == 1 else next_month(start.replace(day=1))
    after_end = end + timedelta(days=1)
    last_full_stop = after_end if after_end.day == 1 else end.replace(day=1)  # first day after the whole months
    if first_full >= last_full_stop:
        return [(daily, start, end)]
    parts: list[tuple[Any, date, date]] = []
    if start < first_full:
        parts.append((daily, start, first_full - timedelta(days=1)))
    parts.append((monthly, first_full, last_full_stop - timedelta(days=1)))
    if last_full_stop <= end:
        parts.append((daily, last_full_stop, end))
    return parts


async def _ticket_rollup_rows(session: AsyncSession, sel: Selection, *, dims: list[str], scope: Scope) -> list[Any]:
    """The ticket figures of a selection by region, unit and period, from the ticket roll-ups (whole months
    from the monthly one): (dimensions…, the sums of TICKET_SUMS) per group."""
    parts: list[tuple[Any, date, date]] = [(StatsTicketDaily, sel.start, sel.end)]
    if not {"day", "week"} & set(sel.group_by):
        parts = _month_parts(sel.start, sel.end, StatsTicketDaily, StatsTicketMonthly)
    rows: list[Any] = []
    for table, low, high in parts:
        columns = [getattr(table, c) for c in dims]
        stmt = (
            select(*columns, *[func.sum(getattr(table, s)) for s in TICKET_SUMS])
            .where(table.day >= low, table.day <= high, scope.clause(table.region_code, table.unit_org_id))
            .group_by(*columns)
        )
        if sel.region is not None:
            stmt = stmt.where(table.region_code == sel.region)
        if sel.unit_org_id is not None:
            stmt = stmt.where(table.unit_org_id == sel.unit_org_id)
        rows.extend((await session.exec(stmt)).all())
    return rows


def _add_ticket_rows(
    rows: list[Any],
    sel: Selection,
    dims: list[str],
    total: Tally,
    groups: dict[GroupKey, Tally],
    keyer: Callable[[Any], GroupKey],
) -> None:
    width = len(dims)
    for row in rows:
        sums = dict(zip(TICKET_SUMS, (int(v or 0) for v in row[width:])))
        days = sums.pop("working_days")
        targets = [total]
        if sel.group_by:
            targets.append(
                groups.setdefault(keyer([_as_date(v) if d == "day" else v for d, v in zip(dims, row)]), Tally())
            )
        for tally in targets:
            tally.tickets.update(sums)
            tally.working_days += days


async def _rollup_rows(
    session: AsyncSession, table: Any, low: date, high: date, *, sel: Selection, dims: list[str], scope: Scope
) -> list[Any]:
    columns = [getattr(table, c) for c in dims]
    sums = [func.sum(table.n)]
    if table is not StatsReasonDaily:
        sums += [func.sum(table.staff_rated), func.sum(table.staff_level_sum)]
    # sqlmodel's select is typed for at most four columns; this one takes as many as the grouping needs.
    stmt = (
        select(*columns, table.level, table.status, *sums)  # type: ignore[call-overload]
        .where(table.day >= low, table.day <= high, scope.clause(table.region_code, table.unit_org_id))
        .group_by(*columns, table.level, table.status)
    )
    if sel.region is not None:
        stmt = stmt.where(table.region_code == sel.region)
    if sel.unit_org_id is not None:
        stmt = stmt.where(table.unit_org_id == sel.unit_org_id)
    if sel.item is not None:
        stmt = stmt.where(table.item_code == sel.item)
    if sel.staff is not None:
        stmt = stmt.where(table.staff_id == sel.staff)
    if sel.channel is not None:
        stmt = stmt.where(table.channel == sel.channel)
    if sel.by_channel:
        stmt = stmt.where(table.status != INVITED)  # an invitation has no channel yet
    if sel.reasons is not None:
        stmt = stmt.where(col(table.code).in_(sel.reasons) if sel.reasons else table.code == -1)
    return list((await session.exec(stmt)).all())


def _raw_dims(group_by: tuple[str, ...]) -> list[str]:
    """The roll-up columns a grouping needs (period groupings read the day)."""
    need: list[str] = []
    for dim in group_by:
        cols = {
            "region": ["region_code"],
            "approval": ["region_code"],
            "unit": ["unit_org_id"],
            "item": ["item_code"],
            "staff": ["unit_org_id", "staff_id"],
            "channel": ["channel"],
            "reason": ["code"],
            "reason_kind": ["code"],
        }.get(dim, ["day"])
        need.extend(c for c in cols if c not in need)
    return need


def _keyer(
    group_by: tuple[str, ...], dims: list[str], labels: Labels, catalogue: Catalogue
) -> Callable[[Any], GroupKey]:
    at = {d: i for i, d in enumerate(dims)}

    def key(row: Any) -> GroupKey:
        out: list[tuple[str, Any]] = []
        for dim in group_by:
            if dim in ("region",):
                out.append((dim, row[at["region_code"]]))
            elif dim == "approval":
                out.append((dim, labels.approval_of_region.get(row[at["region_code"]], ("", ""))[0] or "-"))
            elif dim == "unit":
                out.append((dim, labels.org_code.get(row[at["unit_org_id"]], str(row[at["unit_org_id"]]))))
            elif dim == "item":
                out.append((dim, row[at["item_code"]]))
            elif dim == "staff":
                if "unit" not in group_by:
                    out.append(("unit", labels.org_code.get(row[at["unit_org_id"]], str(row[at["unit_org_id"]]))))
                out.append((dim, row[at["staff_id"]] or "-"))
            elif dim == "channel":
                out.append((dim, row[at["channel"]] or "-"))
            elif dim == "reason":
                out.append((dim, int(row[at["code"]])))
            elif dim == "reason_kind":
                out.append((dim, reason_kind(catalogue, int(row[at["code"]]))))
            else:
                out.append((dim, period_key(dim, _as_date(row[at["day"]]))))
        return tuple(out)

    return key


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    return value


def _local_date(session: AsyncSession, column: Any, tz: ZoneInfo) -> Any:
    """The local calendar day of a stored instant, computed by the database."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return cast(func.timezone(tz.key, column), Date)
    # SQLite holds the UTC clock as text; the zone's offset now (Asia/Shanghai has no daylight saving time).
    offset = datetime.now(tz).utcoffset() or timedelta(0)
    return func.date(column, f"{int(offset.total_seconds() // 60):+d} minutes")


def _flag(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


WORKING_DAY_MARGIN = timedelta(days=366)  # received or resolved this far outside the range: counted day pair by pair


async def _count_tickets(
    session: AsyncSession,
    sel: Selection,
    *,
    scope: Scope,
    calendar: WorkingCalendar,
    labels: Labels,
    total: Tally,
    groups: dict[GroupKey, Tally],
    keyer: Callable[[Any], GroupKey],
    dims: list[str],
) -> None:
    """Rectification and callback figures of the valid bad-review tickets due in the period, counted by the
    database in one row per group. On PostgreSQL the working days from receipt to resolution are summed by
    the database too, from a running count of working days around the period passed as an array; a ticket
    received or resolved outside that span (and every ticket on SQLite) comes back in a row of its own
    (group, day received, day resolved) whose working days are counted here."""
    tz = calendar.tz
    ruled = exists().where(col(EvaluationDecision.evaluation_id) == col(Ticket.evaluation_id))
    wants_item = sel.item is not None or "item" in sel.group_by
    wants_rating = sel.staff is not None or sel.channel is not None or bool({"staff", "channel"} & set(sel.group_by))
    # A ticket keeps its invitation's region: only a unit's figure needs the invitation itself.
    wants_unit = (
        scope.unit_org_id is not None or sel.unit_org_id is not None or bool({"unit", "staff"} & set(sel.group_by))
    )
    region = Invitation.region_code if wants_unit else Ticket.region_code
    dim_columns = {
        "region_code": region,
        "unit_org_id": Invitation.org_id,
        "item_code": ServiceCase.item_code,
        "staff_id": Evaluation.staff_id,
        "channel": Evaluation.channel,
        "code": literal(0),
        "day": _local_date(session, Ticket.due_at, tz),
    }
    # The tickets of the selection with their days computed once, in a subquery; the outer query counts them.
    inner = select(  # type: ignore[call-overload]
        *[dim_columns[d].label(f"k_{d}") for d in dims],
        _local_date(session, func.coalesce(Ticket.received_at, Ticket.resolved_at), tz).label("received"),
        _local_date(session, Ticket.resolved_at, tz).label("resolved"),
        Ticket.status,
        Ticket.redo_count,
        (col(Ticket.resolved_at) <= Ticket.due_at).label("in_time"),
    ).where(
        col(Ticket.due_at) >= _local_start(sel.start, tz),
        col(Ticket.due_at) < _local_start(sel.end + timedelta(days=1), tz),
        ~ruled,
        scope.clause(region, Invitation.org_id),
    )
    if wants_unit or wants_item:
        inner = inner.join(Invitation, col(Invitation.id) == Ticket.invitation_id)
    if wants_rating or wants_item:
        inner = inner.join(Evaluation, col(Evaluation.id) == Ticket.evaluation_id)
    if wants_item:
        first_case = select(func.min(_case.id)).where(_case.invitation_id == Ticket.invitation_id).scalar_subquery()
        inner = inner.outerjoin(ServiceCase, col(ServiceCase.id) == func.coalesce(Evaluation.case_id, first_case))
    if sel.region is not None:
        inner = inner.where(region == sel.region)
    if sel.unit_org_id is not None:
        inner = inner.where(Invitation.org_id == sel.unit_org_id)
    if sel.item is not None:
        inner = inner.where(ServiceCase.item_code == sel.item)
    if sel.staff is not None:
        inner = inner.where(Evaluation.staff_id == sel.staff)
    if sel.channel is not None:
        inner = inner.where(Evaluation.channel == sel.channel)
    t = inner.offset(0).subquery("t")  # OFFSET 0 keeps PostgreSQL from inlining the days into every use
    keys = [t.c[f"k_{d}"] for d in dims]
    received_day, resolved_day = t.c.received, t.c.resolved
    resolved = resolved_day.is_not(None)
    closed = t.c.status.in_(CLOSED_COUNTED)
    redone = t.c.redo_count > 0
    first = sel.start - WORKING_DAY_MARGIN
    last = sel.end + WORKING_DAY_MARGIN
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        running = [0]  # running[k]: working days after `first` up to and including first + k
        day = first
        while day < last:
            day += timedelta(days=1)
            running.append(running[-1] + (1 if calendar.is_working_day(day) else 0))
        counts: Any = Grouping(bindparam("working_days_running", running, type_=ARRAY(Integer)))
        within: Any = and_(received_day >= first, received_day <= last, resolved_day >= first, resolved_day <= last)
        summed: Any = func.sum(
            case(
                (and_(resolved, within), counts[resolved_day - first + 1] - counts[received_day - first + 1]),
                else_=0,
            )
        )
    else:
        within, summed = literal(False), literal(0)
    # A row of its own, keyed by its days, for a resolved ticket outside the span; NULL days for the rest.
    apart = and_(resolved, ~within)
    received_key = case((apart, received_day), else_=None).label("received_key")
    resolved_key = case((apart, resolved_day), else_=None).label("resolved_key")
    # (sqlmodel's select is typed for at most four columns; this one takes the grouping's and ten more.)
    stmt = select(  # type: ignore[call-overload]
        *keys,
        received_key,
        resolved_key,
        func.count(),
        _flag(closed),
        _flag(and_(closed, resolved, t.c.in_time)),
        _flag(or_(t.c.status.in_(CALLED_BACK), redone)),
        _flag(or_(t.c.status.in_(ANSWERED), redone)),
        _flag(t.c.status == "closed_satisfied"),
        _flag(resolved),
        summed,
    ).group_by(*keys, received_key, resolved_key)
    elapsed: dict[tuple[date, date], int] = {}
    width = len(dims)
    for row in (await session.exec(stmt)).all():
        received, resolved_on = row[width], row[width + 1]
        due, n_closed, on_time, called_back, answered, satisfied, n_resolved, days = (
            int(v or 0) for v in row[width + 2 :]
        )
        if resolved_on is not None:
            pair = (_as_date(received), _as_date(resolved_on))
            if pair not in elapsed:
                elapsed[pair] = working_days_between(calendar, *pair)
            days += elapsed[pair] * n_resolved
        counts_of_row = {
            "due": due,
            "closed": n_closed,
            "on_time": on_time,
            "called_back": called_back,
            "answered": answered,
            "satisfied": satisfied,
            "resolved": n_resolved,
        }
        targets = [total]
        if sel.group_by:
            raw = [
                _as_date(v) if d == "day" else (v or "") if d in ("item_code", "staff_id", "channel") else v
                for d, v in zip(dims, row[:width])
            ]
            targets.append(groups.setdefault(keyer(raw), Tally()))
        for tally in targets:
            tally.tickets.update(counts_of_row)
            tally.working_days += days
