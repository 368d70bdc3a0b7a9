"""Keeping the roll-ups equal to a recount of the raw rows, in the writer's transaction.

The rows one evaluation contributes follow from its facts: its day, dimensions, level, status (valid or
the kind of its first ruling), the reason codes it carries (with the rating or in later addenda) and
its staff rating (the latest given). When a record is written, the evaluation's contributions are
computed without the record and with it, and the difference is added (INSERT … ON CONFLICT DO UPDATE,
so concurrent writers add up instead of overwriting). `recount` computes the same contributions from
every raw row; a property test checks that the tables equal it after any sequence of writes.

A ticket's contributions (the rectification and callback figures) follow from its status, due, receipt and
resolution times, redo count and whether its evaluation was ruled; `ticket_changed` adds their difference
around every ticket action, `record_changed` removes them when a ruling voids the evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, delete, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.errors import BrokenInvariant
from gateway.stats.models import (
    StatsDaily,
    StatsReasonDaily,
    StatsTicketDaily,
    StatsTicketMonthly,
    StatsUnitDaily,
    StatsUnitMonthly,
)
from gateway.store.chain import Part
from gateway.store.models import Evaluation, EvaluationAddendum, EvaluationDecision, Invitation, ServiceCase, Ticket
from gateway.store.sets import in_set
from gateway.tickets.calendar import WorkingCalendar

VALID = "valid"
INVITED = "invited"
CLOSED_COUNTED = ("closed_satisfied", "closed_unsatisfied", "closed_no_answer")
CALLED_BACK = ("closed_satisfied", "closed_unsatisfied", "closed_no_answer", "callback_unsatisfied")
ANSWERED = ("closed_satisfied", "closed_unsatisfied", "callback_unsatisfied")
TICKET_SUMS = ("due", "closed", "on_time", "called_back", "answered", "satisfied", "resolved", "working_days")
ROLLUPS: tuple[type[SQLModel], ...] = (
    StatsUnitDaily,
    StatsUnitMonthly,
    StatsDaily,
    StatsReasonDaily,
    StatsTicketDaily,
    StatsTicketMonthly,
)
_KEYS: dict[type[SQLModel], tuple[str, ...]] = {
    StatsTicketDaily: ("day", "region_code", "unit_org_id"),
    StatsTicketMonthly: ("day", "region_code", "unit_org_id"),
    StatsUnitDaily: ("day", "region_code", "unit_org_id", "level", "status"),
    StatsUnitMonthly: ("day", "region_code", "unit_org_id", "level", "status"),
    StatsDaily: ("day", "region_code", "unit_org_id", "item_code", "staff_id", "channel", "level", "status"),
    StatsReasonDaily: (
        "day",
        "region_code",
        "unit_org_id",
        "item_code",
        "staff_id",
        "channel",
        "level",
        "status",
        "code",
    ),
}
_SUMS: dict[type[SQLModel], tuple[str, ...]] = {
    StatsUnitDaily: ("n", "staff_rated", "staff_level_sum"),
    StatsUnitMonthly: ("n", "staff_rated", "staff_level_sum"),
    StatsDaily: ("n", "staff_rated", "staff_level_sum"),
    StatsReasonDaily: ("n",),
    StatsTicketDaily: TICKET_SUMS,
    StatsTicketMonthly: TICKET_SUMS,
}
Key = tuple[Any, ...]
Tally = dict[tuple[type[SQLModel], Key], Counter[str]]


@dataclass(frozen=True)
class Facts:
    """What decides where an evaluation (or an invitation, level 0) is counted."""

    day: date
    region_code: str
    unit_org_id: int
    item_code: str
    staff_id: str
    channel: str
    level: int
    status: str
    codes: frozenset[int] = frozenset()
    staff_level: int | None = None


def contributions(facts: Facts) -> Tally:
    """The roll-up rows one evaluation (or invitation) adds to, and how much."""
    base = {
        "day": facts.day,
        "region_code": facts.region_code,
        "unit_org_id": facts.unit_org_id,
        "item_code": facts.item_code,
        "staff_id": facts.staff_id,
        "channel": facts.channel,
        "level": facts.level,
        "status": facts.status,
    }
    sums = Counter({"n": 1})
    if facts.staff_level is not None:
        sums.update(staff_rated=1, staff_level_sum=facts.staff_level)
    out: Tally = {}
    for table in (StatsUnitDaily, StatsDaily):
        out[(table, tuple(base[k] for k in _KEYS[table]))] = Counter(sums)
    monthly = {**base, "day": facts.day.replace(day=1)}
    out[(StatsUnitMonthly, tuple(monthly[k] for k in _KEYS[StatsUnitMonthly]))] = Counter(sums)
    for code in facts.codes:
        out[(StatsReasonDaily, tuple({**base, "code": code}[k] for k in _KEYS[StatsReasonDaily]))] = Counter(n=1)
    return out


def difference(after: Tally, before: Tally) -> Tally:
    out: Tally = {}
    for key in after.keys() | before.keys():
        delta = Counter(after.get(key, Counter()))
        delta.subtract(before.get(key, Counter()))
        delta = Counter({k: v for k, v in delta.items() if v})
        if delta:
            out[key] = delta
    return out


async def apply(session: AsyncSession, tally: Tally) -> None:
    """Add the tally to the roll-up tables when the transaction commits: merged with the transaction's
    other changes and written by one upsert per table, rows in one lock order (tables as in ROLLUPS,
    rows by key), just before the commit, so a transaction that writes many records (a batch of
    conversations, a bulk report) holds the roll-up rows' locks only for its last moment. Inside a
    savepoint the tally is written at once, so that the savepoint's rollback takes it back."""
    if not tally:
        return
    if session.in_nested_transaction():
        await session.flush()  # as a statement through the session would: pending rows go first
        await session.run_sync(lambda sync: _write(sync.connection(), tally))
        return
    pending: Tally = session.sync_session.info.setdefault(_PENDING, {})
    for key, sums in tally.items():
        pending.setdefault(key, Counter()).update(sums)


async def write_pending(session: AsyncSession) -> None:
    """Write what `apply` holds for the commit now (before reading the roll-ups in the same transaction)."""
    pending: Tally | None = session.sync_session.info.pop(_PENDING, None)
    if pending:
        await session.run_sync(lambda sync: _write(sync.connection(), pending))


_PENDING = "stats_rollup_pending"


def _rows(tally: Tally) -> list[tuple[type[SQLModel], list[dict[str, Any]]]]:
    """The rows to add, table by table in one lock order (tables as in ROLLUPS, rows by key)."""
    out: list[tuple[type[SQLModel], list[dict[str, Any]]]] = []
    for table in ROLLUPS:
        rows = [
            {**dict(zip(_KEYS[table], key)), **{s: delta.get(s, 0) for s in _SUMS[table]}}
            for (t, key), delta in tally.items()
            if t is table and any(delta.values())
        ]
        if rows:
            rows.sort(key=lambda r: tuple(str(r[k]) for k in _KEYS[table]))  # one lock order
            out.append((table, rows))
    return out


def _write(connection: Any, tally: Tally) -> None:
    for table, rows in _rows(tally):
        connection.execute(_upsert(connection.dialect.name, table), rows)


_CHAIN_PARTS: dict[type[SQLModel], Part] = {}


def chain_parts(tally: Tally) -> list[tuple[Part, list[dict[str, Any]]]]:
    """The tally as parts of a chained insert (`gateway.store.chain`, PostgreSQL): the same upserts as
    `apply` writes, in the same lock order, sent within the statement that writes the tally's records.
    For a statement that is its transaction (`Store.autocommit`): the statistics are then written at its
    end, as `apply` writes them at a transaction's end."""
    out: list[tuple[Part, list[dict[str, Any]]]] = []
    for table, rows in _rows(tally):
        part = _CHAIN_PARTS.get(table)
        if part is None:
            name = table.__tablename__
            adds = ", ".join(f"{s} = {name}.{s} + excluded.{s}" for s in _SUMS[table])
            tail = f"ON CONFLICT ({', '.join(_KEYS[table])}) DO UPDATE SET {adds}"
            part = _CHAIN_PARTS[table] = Part(table, (*_KEYS[table], *_SUMS[table]), tail)
        out.append((part, rows))
    return out


@event.listens_for(Session, "before_commit", insert=True)
def _write_at_commit(session: Session) -> None:
    # Before the evaluation log's append (insert=True puts this first): every transaction takes the
    # roll-up rows' locks, then the log head's, in that order.
    if session.in_nested_transaction():
        return
    pending: Tally | None = session.info.pop(_PENDING, None)
    if pending:
        _write(session.connection(), pending)


@event.listens_for(Session, "after_transaction_end")
def _forget_on_rollback(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


_UPSERTS: dict[tuple[str, type[SQLModel]], Any] = {}


def _upsert(dialect: str, table: type[SQLModel]) -> Any:
    """The table's INSERT … ON CONFLICT DO UPDATE that adds the sums, built once per dialect."""
    statement = _UPSERTS.get((dialect, table))
    if statement is None:
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(table.__table__)  # type: ignore[attr-defined]
        statement = insert.on_conflict_do_update(
            index_elements=list(_KEYS[table]),
            set_={s: getattr(table, s) + getattr(insert.excluded, s) for s in _SUMS[table]},
        )
        _UPSERTS[(dialect, table)] = statement
    return statement


# --- facts from the raw rows -------------------------------------------------------------------------


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    return as_utc(instant).astimezone(tz).date()


async def _first_case(session: AsyncSession, evaluation: Evaluation) -> ServiceCase | None:
    if evaluation.case_id is not None:
        return await session.get(ServiceCase, evaluation.case_id)
    # A batch or a theme rated as a whole: counted once, under its first case's item (docs/statistics.md).
    query = (
        select(ServiceCase).where(ServiceCase.invitation_id == evaluation.invitation_id).order_by(col(ServiceCase.id))
    )
    return (await session.exec(query.limit(1))).first()


def evaluation_facts(
    evaluation: Evaluation,
    invitation: Invitation,
    item_code: str,
    addenda: Sequence[EvaluationAddendum],
    decisions: Sequence[EvaluationDecision],
    tz: ZoneInfo,
) -> Facts:
    """The facts of an evaluation given its addenda and rulings (each list in id order)."""
    codes = set(evaluation.reason_codes)
    staff_level = evaluation.staff_level
    for addendum in addenda:
        if addendum.kind == "reasons":
            codes.update(addendum.reason_codes)
        elif addendum.kind == "staff" and addendum.staff_level is not None:
            staff_level = addendum.staff_level
    return Facts(
        day=local_day(evaluation.created_at, tz),
        region_code=invitation.region_code,
        unit_org_id=invitation.org_id,
        item_code=item_code,
        staff_id=evaluation.staff_id or "",
        channel=evaluation.channel,
        level=evaluation.level,
        status=decisions[0].decision if decisions else VALID,
        codes=frozenset(codes),
        staff_level=staff_level,
    )


# Built once: every addendum, ruling and ticket action runs them (the values are bound at execution).
_ADDENDA_OF = (
    select(EvaluationAddendum)
    .where(in_set(col(EvaluationAddendum.evaluation_id), "ids"))
    .order_by(col(EvaluationAddendum.id))
)
_DECISIONS_OF = (
    select(EvaluationDecision)
    .where(in_set(col(EvaluationDecision.evaluation_id), "ids"))
    .order_by(col(EvaluationDecision.id))
)
Stored = tuple[list[EvaluationAddendum], list[EvaluationDecision]]


async def stored_records(session: AsyncSession, evaluation_ids: Sequence[int]) -> dict[int, Stored]:
    """Each evaluation's addenda and rulings as stored now, in the order written: what `record_changed`
    reads, for several evaluations in one query each."""
    out: dict[int, Stored] = {i: ([], []) for i in evaluation_ids}
    ids = list(out)
    for addendum in (await session.exec(_ADDENDA_OF, params={"ids": ids})).all():
        out[addendum.evaluation_id][0].append(addendum)
    for decision in (await session.exec(_DECISIONS_OF, params={"ids": ids})).all():
        out[decision.evaluation_id][1].append(decision)
    return out


_RULED = select(EvaluationDecision.id).where(EvaluationDecision.evaluation_id == bindparam("e")).limit(1)


async def record_changed(
    session: AsyncSession,
    *,
    kind: str,
    record: Evaluation | EvaluationAddendum | EvaluationDecision,
    calendar: WorkingCalendar,
    stored: Stored | None = None,
) -> None:
    """Bring the roll-ups up to date with one record just written (called from `record_written`).
    `stored`: the evaluation's addenda and rulings as stored now, the record among them, when the caller
    has read them (not with a ruling, whose reads must follow the ticket's lock)."""
    tz = calendar.tz
    if isinstance(record, Evaluation):
        evaluation = record
    else:
        found = await session.get(Evaluation, record.evaluation_id)
        if found is None:
            raise ValueError(f"{kind} {record.id} refers to a missing evaluation")
        evaluation = found
    invitation = await session.get(Invitation, evaluation.invitation_id)
    if invitation is None:
        raise ValueError(f"evaluation {evaluation.id} refers to a missing invitation")
    ticket = None
    if isinstance(record, EvaluationDecision):
        # A ruling and an action on the evaluation's ticket take turns (the action holds the same row lock), so
        # each sees the other's outcome: the rulings and the ticket's state are read after the lock is granted.
        locked = (
            select(Ticket)
            .where(Ticket.evaluation_id == evaluation.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        ticket = (await session.exec(locked)).first()
    case = await _first_case(session, evaluation)
    item_code = case.item_code if case else ""
    addenda: list[EvaluationAddendum] = []
    decisions: list[EvaluationDecision] = []
    if stored is not None and not isinstance(record, EvaluationDecision):
        addenda, decisions = stored
    elif not isinstance(record, Evaluation) and evaluation.id is not None:
        addenda, decisions = (await stored_records(session, [evaluation.id]))[evaluation.id]
    after = evaluation_facts(evaluation, invitation, item_code, addenda, decisions, tz)
    if isinstance(record, Evaluation):
        before: Tally = {}
    else:
        without_a = [a for a in addenda if a.id != record.id] if isinstance(record, EvaluationAddendum) else addenda
        without_d = [d for d in decisions if d.id != record.id] if isinstance(record, EvaluationDecision) else decisions
        before = contributions(evaluation_facts(evaluation, invitation, item_code, without_a, without_d, tz))
    change = difference(contributions(after), before)
    if ticket is not None and not without_d:  # the first ruling voids the evaluation's ticket
        voided = ticket_contributions(ticket, invitation, ruled=False, calendar=calendar)
        change = merge_tallies([change, difference({}, voided)])
    await apply(session, change)


def invitation_facts(invitation: Invitation, *, item_code: str, staff_id: str | None, tz: ZoneInfo) -> Facts:
    """An invitation counts under level 0, status `invited`, on the local day of its service (参评率)."""
    return Facts(
        day=local_day(invitation.completed_at, tz),
        region_code=invitation.region_code,
        unit_org_id=invitation.org_id,
        item_code=item_code,
        staff_id=staff_id or "",
        channel="",
        level=0,
        status=INVITED,
    )


async def invitation_created(
    session: AsyncSession, *, invitation: Invitation, item_code: str, staff_id: str | None, tz: ZoneInfo
) -> None:
    """Count a new invitation (a batch or theme is one invitation, however many cases join it)."""
    await apply(session, contributions(invitation_facts(invitation, item_code=item_code, staff_id=staff_id, tz=tz)))


def working_days_between(calendar: WorkingCalendar, received: date, resolved: date) -> int:
    """Working days after the day of receipt, up to and including the day of resolution."""
    count, day = 0, received + timedelta(days=1)
    while day <= resolved:
        if calendar.is_working_day(day):
            count += 1
        day += timedelta(days=1)
    return count


def ticket_contributions(ticket: Ticket, invitation: Invitation, *, ruled: bool, calendar: WorkingCalendar) -> Tally:
    """The ticket roll-up rows one ticket adds to: none once its evaluation is ruled (it no longer counts)."""
    if ruled:
        return {}
    tz = calendar.tz
    closed = ticket.status in CLOSED_COUNTED
    redone = ticket.redo_count > 0
    sums = Counter(
        due=1,
        closed=int(closed),
        on_time=int(closed and ticket.resolved_at is not None and as_utc(ticket.resolved_at) <= as_utc(ticket.due_at)),
        called_back=int(ticket.status in CALLED_BACK or redone),
        answered=int(ticket.status in ANSWERED or redone),
        satisfied=int(ticket.status == "closed_satisfied"),
    )
    if ticket.resolved_at is not None:
        received = local_day(ticket.received_at or ticket.resolved_at, tz)
        sums.update(
            resolved=1, working_days=working_days_between(calendar, received, local_day(ticket.resolved_at, tz))
        )
    day = local_day(ticket.due_at, tz)
    return {
        (StatsTicketDaily, (day, invitation.region_code, invitation.org_id)): sums,
        (StatsTicketMonthly, (day.replace(day=1), invitation.region_code, invitation.org_id)): Counter(sums),
    }


async def ticket_tally(
    session: AsyncSession, ticket: Ticket, calendar: WorkingCalendar, *, ruled: bool | None = None
) -> Tally:
    """What a ticket adds to the roll-ups as it stands now. `ruled`: whether its evaluation has a ruling,
    when the caller knows (read from the database otherwise)."""
    invitation = await session.get(Invitation, ticket.invitation_id)
    if invitation is None:
        raise BrokenInvariant(f"ticket {ticket.id} refers to a missing invitation")
    if ruled is None:
        ruled = (await session.exec(_RULED, params={"e": ticket.evaluation_id})).first() is not None
    return ticket_contributions(ticket, invitation, ruled=ruled, calendar=calendar)


async def ticket_changed(
    session: AsyncSession, ticket: Ticket, *, before: Tally, calendar: WorkingCalendar, ruled: bool | None = None
) -> None:
    """Bring the ticket roll-ups up to date with a ticket just created (before = {}) or changed by an action."""
    await apply(session, difference(await ticket_tally(session, ticket, calendar, ruled=ruled), before))


# --- recount and rebuild -------------------------------------------------------------------------------


async def recount(session: AsyncSession, calendar: WorkingCalendar) -> Tally:
    """Every roll-up row computed afresh from the raw rows (tests, `gateway stats rebuild`)."""
    tz = calendar.tz
    invitations = {i.id: i for i in (await session.exec(select(Invitation))).all()}
    first_cases: dict[int, ServiceCase] = {}
    cases: dict[int, ServiceCase] = {}
    for case in (await session.exec(select(ServiceCase).order_by(col(ServiceCase.id)))).all():
        cases[case.id] = case  # type: ignore[index]
        first_cases.setdefault(case.invitation_id, case)
    addenda: dict[int, list[EvaluationAddendum]] = {}
    for a in (await session.exec(select(EvaluationAddendum).order_by(col(EvaluationAddendum.id)))).all():
        addenda.setdefault(a.evaluation_id, []).append(a)
    decisions: dict[int, list[EvaluationDecision]] = {}
    for d in (await session.exec(select(EvaluationDecision).order_by(col(EvaluationDecision.id)))).all():
        decisions.setdefault(d.evaluation_id, []).append(d)
    total: Tally = {}

    def add(tally: Tally) -> None:
        for key, sums in tally.items():
            total.setdefault(key, Counter()).update(sums)

    for invitation in invitations.values():
        first = first_cases.get(invitation.id)  # type: ignore[arg-type]
        add(
            contributions(
                invitation_facts(
                    invitation,
                    item_code=first.item_code if first else "",
                    staff_id=first.staff_id if first else None,
                    tz=tz,
                )
            )
        )
    for e in (await session.exec(select(Evaluation))).all():
        if e.id is None:
            raise BrokenInvariant("evaluation.id is missing")
        service_case = cases.get(e.case_id) if e.case_id is not None else first_cases.get(e.invitation_id)
        add(
            contributions(
                evaluation_facts(
                    e,
                    invitations[e.invitation_id],
                    service_case.item_code if service_case else "",
                    addenda.get(e.id, []),
                    decisions.get(e.id, []),
                    tz,
                )
            )
        )
    for ticket in (await session.exec(select(Ticket))).all():
        ruled = ticket.evaluation_id in decisions
        add(ticket_contributions(ticket, invitations[ticket.invitation_id], ruled=ruled, calendar=calendar))
    return total


async def stored(session: AsyncSession) -> Tally:
    """The roll-up tables as they are, without rows that add up to nothing."""
    await write_pending(session)
    out: Tally = {}
    for table in ROLLUPS:
        for row in (await session.exec(select(table))).all():
            sums = Counter({s: getattr(row, s) for s in _SUMS[table] if getattr(row, s)})
            if sums:
                out[(table, tuple(getattr(row, k) for k in _KEYS[table]))] = sums
    return out


async def rebuild(session: AsyncSession, calendar: WorkingCalendar) -> int:
    """Replace the roll-ups by a recount (after migrating a store that already holds ratings, or after the
    working calendar changed: the ticket roll-ups hold working days counted with it)."""
    session.sync_session.info.pop(_PENDING, None)  # the recount covers it
    for table in ROLLUPS:
        await session.exec(delete(table))
    tally = await recount(session, calendar)
    await apply(session, tally)
    return sum(1 for _ in tally)


def merge_tallies(tallies: Sequence[Tally]) -> Tally:
    """The sum of several tallies."""
    total: Tally = {}
    for tally in tallies:
        for key, sums in tally.items():
            total.setdefault(key, Counter()).update(sums)
    return total


async def row_counts(session: AsyncSession) -> dict[str, int]:
    await write_pending(session)
    counts: dict[str, int] = {}
    for table in ROLLUPS:
        name: str = table.__table__.name  # type: ignore[attr-defined]  # SQLModel's stubs omit __table__
        counts[name] = (await session.exec(select(func.count()).select_from(table))).one()
    return counts


__all__ = [
    "Facts",
    "contributions",
    "invitation_created",
    "rebuild",
    "recount",
    "record_changed",
    "stored",
    "ticket_changed",
    "ticket_contributions",
    "ticket_tally",
]
