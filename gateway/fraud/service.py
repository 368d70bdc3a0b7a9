"""Fraud flags for people: list, read and rule them within jurisdiction; staff contact lists; counts for
statistics (Art. 19).

A flag never changes a rating. A confirmed flag on a good review (levels 3-5) writes an
evaluation_decision of kind "fraud", as an appeal ruling does, so the rating stops counting but stays
stored; a bad review in a confirmed flag keeps counting until its work order's appeal is ruled, which can
cite the flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, case, delete, distinct, func, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.deps import Deps
from gateway.errors import BrokenInvariant, DomainError
from gateway.evaluations.records import record_written
from gateway.fraud.models import FlagEvaluation, StaffContact
from gateway.fraud.schemas import (
    FlagDetail,
    FlaggedEvaluation,
    FlagOut,
    FlagPage,
    FlagQuery,
    RulingIn,
    StaffContactsIn,
    StaffContactsOut,
)
from gateway.orgs import Caller, org_by_code
from gateway.privacy import InvalidPhone, normalise_phone
from gateway.store.models import (
    Citizen,
    Evaluation,
    EvaluationDecision,
    FraudFlag,
    Invitation,
    Organisation,
    Ticket,
)

log = logging.getLogger(__name__)

GOOD_LEVELS = (3, 4, 5)  # 好评: 基本满意 and above, as in 好评率 = (n3+n4+n5)/N
FRAUD_DECISION = "fraud"


class FraudError(DomainError):
    """Base of the fraud-flag errors."""


class FlagNotFound(FraudError):
    status = 404
    code = "not_found"

    def __init__(self, flag_id: int | None = None) -> None:
        what = f"flag {flag_id}" if flag_id is not None else "the flag"
        super().__init__(f"{what} does not exist or is outside your jurisdiction")


class FraudForbidden(FraudError):
    status = 403
    code = "forbidden"


class AlreadyRuled(FraudError):
    status = 409
    code = "conflict"


class InvalidStaffList(FraudError):
    status = 422
    code = "invalid"


def _may_read(caller: Caller) -> None:
    # Supervision is the approval departments' and the operator's; a unit does not see flags about its staff.
    if caller.kind not in ("operator", "city_bureau", "county_dept"):
        raise FraudForbidden("fraud flags are read by approval departments and the platform operator")


def _visible(caller: Caller, flag: FraudFlag) -> bool:
    return caller.covers_region(flag.region_code)


def _scope(caller: Caller) -> ColumnElement[bool]:
    if caller.kind == "city_bureau":
        return col(FraudFlag.region_code).startswith(caller.region_code[:4])
    return col(FraudFlag.region_code) == caller.region_code


async def list_flags(session: AsyncSession, *, caller: Caller, query: FlagQuery) -> FlagPage:
    """Flags in the caller's jurisdiction, newest first."""
    _may_read(caller)
    statement = select(FraudFlag, Organisation.code).outerjoin(
        Organisation, col(Organisation.id) == col(FraudFlag.ruled_by_org_id)
    )
    if caller.kind != "operator":
        statement = statement.where(_scope(caller))
    if query.status:
        statement = statement.where(FraudFlag.status == query.status)
    if query.rule:
        statement = statement.where(FraudFlag.rule == query.rule)
    if query.before_id:
        statement = statement.where(col(FraudFlag.id) < query.before_id)
    rows = list(await session.exec(statement.order_by(col(FraudFlag.id).desc()).limit(query.limit + 1)))
    items = [_out(flag, code) for flag, code in rows[: query.limit]]
    return FlagPage(items=items, next_before_id=items[-1].id if len(rows) > query.limit else None)


def _out(flag: FraudFlag, ruled_by: str | None) -> FlagOut:
    if flag.id is None:
        raise ValueError("flag without id")
    return FlagOut(
        id=flag.id,
        rule=flag.rule,
        subject=flag.subject,
        region_code=flag.region_code,
        status=flag.status,
        evaluation_count=flag.evaluation_count,
        created_at=flag.created_at,
        ruled_at=flag.ruled_at,
        ruled_by=ruled_by,
        ruling_note=flag.ruling_note,
    )


async def _load(session: AsyncSession, caller: Caller, flag_id: int, *, lock: bool = False) -> FraudFlag:
    _may_read(caller)
    query = select(FraudFlag).where(FraudFlag.id == flag_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    flag = (await session.exec(query)).first()
    if flag is None or not _visible(caller, flag):
        raise FlagNotFound(flag_id)
    return flag


async def flag_detail(session: AsyncSession, *, caller: Caller, flag_id: int) -> FlagDetail:
    """One flag with its evidence and the evaluations it is about."""
    flag = await _load(session, caller, flag_id)
    return await _detail(session, flag)


async def _detail(session: AsyncSession, flag: FraudFlag, decisions_written: int = 0) -> FlagDetail:
    e, i, o, c, t = Evaluation, Invitation, Organisation, Citizen, Ticket
    # sqlmodel's select is typed for at most four columns; this one takes seven.
    rows = await session.exec(
        select(  # type: ignore[call-overload]
            e, i.item_name, o.code, i.region_code, c.phone_masked, c.telegram_chat_id, t.id
        )
        .join(FlagEvaluation, col(FlagEvaluation.evaluation_id) == col(e.id))
        .join(i, col(i.id) == col(e.invitation_id))
        .join(o, col(o.id) == col(i.org_id))
        .outerjoin(c, col(c.id) == col(e.citizen_id))
        .outerjoin(t, col(t.evaluation_id) == col(e.id))
        .where(FlagEvaluation.flag_id == flag.id)
        .order_by(col(e.id))
    )
    listed = list(rows)
    ids = [row[0].id for row in listed]
    stopped = set()
    if ids:
        stopped = set(
            (
                await session.exec(
                    select(EvaluationDecision.evaluation_id).where(col(EvaluationDecision.evaluation_id).in_(ids))
                )
            ).all()
        )
    evaluations = [
        FlaggedEvaluation(
            id=ev.id,
            level=ev.level,
            channel=ev.channel,
            created_at=ev.created_at,
            item_name=item,
            org_code=code,
            region_code=region,
            staff_id=ev.staff_id,
            citizen=masked or ("Telegram" if chat else None),
            ticket_id=ticket_id,
            counts=ev.id not in stopped,
        )
        for ev, item, code, region, masked, chat, ticket_id in listed
    ]
    ruled_by = None
    if flag.ruled_by_org_id is not None:
        org = await session.get(Organisation, flag.ruled_by_org_id)
        ruled_by = org.code if org else None
    base = _out(flag, ruled_by)
    return FlagDetail(
        **base.model_dump(), evidence=flag.evidence, evaluations=evaluations, decisions_written=decisions_written
    )


async def rule_flag(session: AsyncSession, *, caller: Caller, flag_id: int, ruling: RulingIn, deps: Deps) -> FlagDetail:
    """Confirm or dismiss a flag (an approval department within its jurisdiction), once."""
    flag = await _load(session, caller, flag_id, lock=True)
    if not caller.is_approval:
        raise FraudForbidden("only the approval department of the flag's region rules a flag")
    if flag.status != "open":
        raise AlreadyRuled(f"flag {flag_id} was already {flag.status}; a ruling is not changed")
    at = deps.clock.now()
    # The conditional UPDATE is the race guard: of two rulings at the same moment only one lands.
    moved = await session.exec(
        update(FraudFlag)
        .where(col(FraudFlag.id) == flag_id, col(FraudFlag.status) == "open")
        .values(status=ruling.outcome, ruled_at=at, ruled_by_org_id=caller.org_id, ruling_note=ruling.note)
    )
    if moved.rowcount != 1:
        raise AlreadyRuled(f"flag {flag_id} was ruled at the same moment by someone else")
    written = 0
    if ruling.outcome == "confirmed":
        written = await _stop_counting(session, flag=flag, caller=caller, note=ruling.note, deps=deps, at=at)
    await session.refresh(flag)
    log.info("fraud flag ruled", extra={"flag_id": flag_id, "outcome": ruling.outcome, "decisions": written})
    return await _detail(session, flag, decisions_written=written)


async def _stop_counting(
    session: AsyncSession, *, flag: FraudFlag, caller: Caller, note: str, deps: Deps, at: datetime
) -> int:
    """Art. 19: the good reviews of a confirmed flag stop counting, each by one decision row; the rating
    itself stays as given. One already ruled out (by an appeal or another flag) gets no second row."""
    e = Evaluation
    good = list(
        await session.exec(
            select(e.id)
            .join(FlagEvaluation, col(FlagEvaluation.evaluation_id) == col(e.id))
            .where(FlagEvaluation.flag_id == flag.id, col(e.level).in_(GOOD_LEVELS))
            .order_by(col(e.id))
        )
    )
    if not good:
        return 0
    ruled = set(
        (
            await session.exec(
                select(EvaluationDecision.evaluation_id).where(col(EvaluationDecision.evaluation_id).in_(good))
            )
        ).all()
    )
    written = 0
    for evaluation_id in good:
        if evaluation_id is None:
            raise BrokenInvariant("evaluation.id is missing")
        if evaluation_id in ruled:
            continue
        decision = EvaluationDecision(
            evaluation_id=evaluation_id,
            ticket_id=None,
            decision=FRAUD_DECISION,
            org_id=caller.org_id,
            note=f"fraud flag #{flag.id} ({flag.rule}): {note}"[:2000],
            created_at=at,
        )
        session.add(decision)
        await session.flush()
        await record_written(session, kind="decision", record=decision, deps=deps, at=at)
        written += 1
    return written


async def replace_staff_contacts(
    session: AsyncSession, *, caller: Caller, data: StaffContactsIn, deps: Deps
) -> StaffContactsOut:
    """Replace a unit's staff phone list (hashed like citizens' numbers). The approval department over the
    unit or the operator uploads it: the unit itself is the one the rule watches."""
    unit = await org_by_code(session, data.org_code)
    if unit is None or unit.id is None:
        raise InvalidStaffList(f"org_code {data.org_code!r} is not a registered organisation", field="org_code")
    if not (caller.kind == "operator" or (caller.is_approval and caller.covers_region(unit.region_code))):
        raise FraudForbidden(
            "staff contact lists are uploaded by the approval department over the unit", field="org_code"
        )
    hashes: dict[str, str] = {}
    for index, contact in enumerate(data.contacts):
        try:
            phone = normalise_phone(contact.phone)
        except InvalidPhone as exc:
            raise InvalidStaffList(f"contacts.{index}.phone: {exc}", field=f"contacts.{index}.phone") from None
        if "\x00" in contact.staff_id:
            raise InvalidStaffList(
                f"contacts.{index}.staff_id: must not contain NUL", field=f"contacts.{index}.staff_id"
            )
        hashes[deps.vault.lookup_hash(phone)] = contact.staff_id
    at = deps.clock.now()
    await session.exec(delete(StaffContact).where(col(StaffContact.org_id) == unit.id))
    rows = [{"org_id": unit.id, "staff_id": staff, "phone_hash": h, "created_at": at} for h, staff in hashes.items()]
    for start in range(0, len(rows), 500):
        statement = insert(StaffContact.__table__).values(rows[start : start + 500])  # type: ignore[attr-defined]
        await session.exec(statement)
    log.info("staff contacts replaced", extra={"org": unit.code, "contacts": len(rows)})
    return StaffContactsOut(org_code=unit.code, contacts=len(rows))


@dataclass(frozen=True)
class FlagCounts:
    """Evaluations by fraud-flag state: flagged and still open, confirmed, dismissed (an evaluation in
    several flags counts once, under its most decisive state: confirmed, then open, then dismissed)."""

    open: int
    confirmed: int
    dismissed: int

    @property
    def flagged(self) -> int:
        return self.open + self.confirmed + self.dismissed


async def flag_counts(
    session: AsyncSession,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    region_prefix: str | None = None,
) -> FlagCounts:
    """How many evaluations (rated in [start, end), in regions starting with region_prefix) fraud flags
    hold, by the flags' state; statistics show them apart from the valid ones."""
    e, i, f = Evaluation, Invitation, FraudFlag
    # confirmed 3 > open 2 > dismissed 1: the most decisive state an evaluation is in.
    rank = func.max(case((col(f.status) == "confirmed", 3), (col(f.status) == "open", 2), else_=1))
    per_evaluation = (
        select(FlagEvaluation.evaluation_id, rank.label("rank"))
        .join(f, col(f.id) == col(FlagEvaluation.flag_id))
        .join(e, col(e.id) == col(FlagEvaluation.evaluation_id))
        .join(i, col(i.id) == col(e.invitation_id))
    )
    if start is not None:
        per_evaluation = per_evaluation.where(col(e.created_at) >= start)
    if end is not None:
        per_evaluation = per_evaluation.where(col(e.created_at) < end)
    if region_prefix:
        per_evaluation = per_evaluation.where(col(i.region_code).startswith(region_prefix))
    sub = per_evaluation.group_by(col(FlagEvaluation.evaluation_id)).subquery()
    rows = await session.exec(select(sub.c.rank, func.count(distinct(sub.c.evaluation_id))).group_by(sub.c.rank))
    counts = {rank_value: n for rank_value, n in rows}
    return FlagCounts(open=counts.get(2, 0), confirmed=counts.get(3, 0), dismissed=counts.get(1, 0))
