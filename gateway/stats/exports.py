"""Exports of evaluations and tickets within a jurisdiction, as CSV or XLSX, streamed.

Phone numbers are masked; every text cell that a spreadsheet could read as a formula (starting with
= + - @, a tab or a carriage return) gets a leading apostrophe (OWASP "CSV injection").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as core_select
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import BrokenInvariant
from gateway.orgs import Caller, ticket_scope
from gateway.privacy import redact
from gateway.stats.queries import Scope
from gateway.store.models import (
    Citizen,
    Evaluation,
    EvaluationAddendum,
    EvaluationDecision,
    Invitation,
    Organisation,
    ServiceCase,
    Ticket,
)
from gateway.tickets.calendar import WorkingCalendar

CHUNK_ROWS = 500
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

EVALUATION_COLUMNS = (
    "评价编号",
    "评价时间",
    "行政区划",
    "单位编码",
    "单位名称",
    "事项编码",
    "事项名称",
    "办件编号",
    "窗口人员",
    "评价渠道",
    "评价等级",
    "评价内容编码",
    "文字评价",
    "员工评价",
    "是否计入统计",
    "评价人手机号",
    "工单编号",
)
TICKET_COLUMNS = (
    "工单编号",
    "创建时间",
    "行政区划",
    "单位编码",
    "单位名称",
    "事项名称",
    "评价等级",
    "责任类型",
    "状态",
    "办理期限",
    "是否超期",
    "办结时间",
    "关闭时间",
    "延期工作日",
    "重办次数",
    "评价人手机号",
    "整改答复",
)

_case = aliased(ServiceCase)  # a batch's first case, looked up beside the joined one


def safe_cell(value: Any) -> Any:
    """A cell as text a spreadsheet will not evaluate: a leading apostrophe before formula characters."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _local(value: datetime | None, calendar: WorkingCalendar) -> str:
    if value is None:
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(calendar.tz).strftime("%Y-%m-%d %H:%M:%S")


def _bounds(start: date, end: date, calendar: WorkingCalendar) -> tuple[datetime, datetime]:
    tz = calendar.tz
    return (
        datetime.combine(start, datetime.min.time(), tzinfo=tz).astimezone(timezone.utc),
        datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz).astimezone(timezone.utc),
    )


async def evaluation_rows(
    session: AsyncSession, *, caller: Caller, start: date, end: date, calendar: WorkingCalendar
) -> AsyncIterator[list[Any]]:
    """Evaluations rated in the days, oldest first, within the caller's jurisdiction."""
    scope = Scope.of(caller)
    since, until = _bounds(start, end, calendar)
    first_case = select(func.min(_case.id)).where(_case.invitation_id == Evaluation.invitation_id).scalar_subquery()
    # SQLAlchemy's select (sqlmodel's is typed for at most four columns); streamed, not run by `exec`.
    stmt = (
        core_select(
            Evaluation,
            col(Invitation.region_code),
            col(Organisation.code),
            col(Organisation.name),
            col(ServiceCase.item_code),
            col(Invitation.item_name),
            col(ServiceCase.case_no),
            col(Citizen.phone_masked),
            col(Ticket.id),
        )
        .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
        .join(Organisation, col(Organisation.id) == Invitation.org_id)
        .outerjoin(ServiceCase, col(ServiceCase.id) == func.coalesce(Evaluation.case_id, first_case))
        .outerjoin(Citizen, col(Citizen.id) == Evaluation.citizen_id)
        .outerjoin(Ticket, col(Ticket.evaluation_id) == Evaluation.id)
        .where(
            col(Evaluation.created_at) >= since,
            col(Evaluation.created_at) < until,
            scope.clause(Invitation.region_code, Invitation.org_id),
        )
        .order_by(col(Evaluation.id))
    )
    result = await session.stream(stmt.execution_options(yield_per=CHUNK_ROWS))
    async for chunk in result.partitions(CHUNK_ROWS):
        ids = [e.id for e, *_ in chunk if e.id is not None]
        extra = await _addenda_and_rulings(session, ids)
        for e, region, org_code, org_name, item_code, item_name, case_no, phone, ticket_id in chunk:
            if e.id is None:
                raise BrokenInvariant("evaluation.id is missing")
            codes, staff_level, ruling = extra.get(e.id, (set(), None, None))
            yield [
                e.id,
                _local(e.created_at, calendar),
                region,
                org_code,
                org_name,
                item_code or "",
                item_name,
                case_no or "",
                e.staff_id or "",
                e.channel,
                e.level,
                ",".join(str(c) for c in sorted(set(e.reason_codes) | codes)),
                redact(e.content),
                staff_level if staff_level is not None else (e.staff_level or ""),
                "计入"
                if ruling is None
                else {"invalid": "不计入(无效)", "malicious": "不计入(恶意)"}.get(ruling, f"不计入({ruling})"),
                phone or "",
                ticket_id or "",
            ]


async def _addenda_and_rulings(
    session: AsyncSession, ids: Sequence[int]
) -> dict[int, tuple[set[int], int | None, str | None]]:
    out: dict[int, tuple[set[int], int | None, str | None]] = {}
    addenda = await session.exec(
        select(EvaluationAddendum)
        .where(col(EvaluationAddendum.evaluation_id).in_(ids))
        .order_by(col(EvaluationAddendum.id))
    )
    for a in addenda.all():
        codes, staff, ruling = out.get(a.evaluation_id, (set(), None, None))
        if a.kind == "reasons":
            codes = codes | set(a.reason_codes)
        elif a.staff_level is not None:
            staff = a.staff_level
        out[a.evaluation_id] = (codes, staff, ruling)
    rulings = await session.exec(
        select(EvaluationDecision)
        .where(col(EvaluationDecision.evaluation_id).in_(ids))
        .order_by(col(EvaluationDecision.id))
    )
    for d in rulings.all():
        codes, staff, ruling = out.get(d.evaluation_id, (set(), None, None))
        out[d.evaluation_id] = (codes, staff, ruling or d.decision)
    return out


async def ticket_rows(
    session: AsyncSession, *, caller: Caller, start: date, end: date, calendar: WorkingCalendar, now: datetime
) -> AsyncIterator[list[Any]]:
    """Tickets created in the days, oldest first, within the caller's jurisdiction (as the ticket list)."""
    from gateway.tickets.workflow import is_overdue

    since, until = _bounds(start, end, calendar)
    unit = Organisation
    stmt = (
        core_select(Ticket, col(Invitation.item_name), col(unit.code), col(unit.name), col(Citizen.phone_masked))
        .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
        .outerjoin(unit, col(unit.id) == Ticket.unit_org_id)
        .outerjoin(Citizen, col(Citizen.id) == Ticket.citizen_id)
        .where(col(Ticket.created_at) >= since, col(Ticket.created_at) < until, ticket_scope(caller))
        .order_by(col(Ticket.id))
    )
    result = await session.stream(stmt.execution_options(yield_per=CHUNK_ROWS))
    async for t, item_name, unit_code, unit_name, phone in result:
        yield [
            t.id,
            _local(t.created_at, calendar),
            t.region_code,
            unit_code or "",
            unit_name or "",
            item_name,
            t.level,
            {"platform": "平台建设", "handling": "办理"}.get(t.responsibility, t.responsibility),
            t.status,
            _local(t.due_at, calendar),
            "是" if is_overdue(t, now) else "否",
            _local(t.resolved_at, calendar),
            _local(t.closed_at, calendar),
            t.extension_working_days,
            t.redo_count,
            phone or "",
            redact(t.reply_text),
        ]
