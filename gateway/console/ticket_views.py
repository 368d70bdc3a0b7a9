"""The work-order pages: the inbox, one ticket with exactly the actions this person may take now, the
evaluator's number (revealed once, logged) and the reply's remaining SMS length.

Every action goes through gateway.tickets.actions.apply_action, as the API's does; which forms appear
is decided by the workflow's own check (`allowed_actions` in the ticket detail, built on check_allowed).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.console import audit, texts
from gateway.console.web import PageError, Person, client_address, form, person, render
from gateway.errors import BrokenInvariant, DomainError
from gateway.orgs import city_of, is_city_level
from gateway.store.models import Evaluation, Organisation, Ticket
from gateway.tickets.actions import apply_action
from gateway.tickets.calendar import WorkingCalendar
from gateway.tickets.errors import TicketNotFound
from gateway.tickets.messages import reply_room
from gateway.tickets.queries import list_by_urgency, read_contact, ticket_detail
from gateway.tickets.schemas import ACTION_NAMES, MAX_ID, ActionIn, TicketDetail, TicketQuery, TicketSummary
from gateway.tickets.workflow import CLOSED_STATUSES, STATUSES
from gateway.web.keys import DEPS, DISPATCHER, STORE

routes = web.RouteTableDef()

PER_PAGE = 25
NOT_CLOSED = ",".join(s for s in STATUSES if s not in CLOSED_STATUSES)
_FILTERS = ("status", "region", "unit", "overdue", "level", "created_from", "created_to")
_INT_FIELDS = ("working_days", "expected_version")
REPLY_MAX = 500


def days_left(due_at: datetime, overdue: bool, now: datetime, calendar: WorkingCalendar) -> tuple[int, bool]:
    """Working days left until the deadline (today counted while it is a working day), or days overdue."""
    last_day = calendar.local_date(as_utc(due_at)) - timedelta(days=1)
    today = calendar.local_date(now)
    count, day = 0, (last_day + timedelta(days=1) if overdue else today)
    end = today if overdue else last_day
    while day <= end and count < 400:
        if calendar.is_working_day(day):
            count += 1
        day += timedelta(days=1)
    return count, overdue


def _ticket_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise TicketNotFound(None)
    return int(raw)


@routes.get("/tickets")
async def inbox(request: web.Request) -> web.StreamResponse:
    p = person(request)
    deps = request.config_dict[DEPS]
    raw = {k: request.query.get(k, "").strip() for k in _FILTERS}
    wanted: dict[str, Any] = {k: v for k, v in raw.items() if v}
    status_choice = raw["status"] or "open"
    if status_choice == "open":
        wanted["status"] = NOT_CLOSED
    elif status_choice == "all":
        wanted.pop("status", None)
    try:
        page_no = max(1, min(int(request.query.get("page", "1") or "1"), 10_000))
    except ValueError:
        page_no = 1
    error = ""
    items: list[TicketSummary] = []
    more = False
    try:
        query = TicketQuery.model_validate({**wanted, "limit": PER_PAGE})
    except ValidationError as exc:
        error, _ = texts.validation_text(exc)
        query = None
    if query is not None:
        try:
            async with request.config_dict[STORE].transaction() as session:
                items, more = await list_by_urgency(
                    session, caller=p.caller, query=query, deps=deps, offset=(page_no - 1) * PER_PAGE
                )
        except DomainError as exc:
            error = texts.refusal(exc) if exc.field != "unit" else "筛选的承办单位未登记。"
    now = deps.clock.now()
    rows = [(t, *days_left(t.due_at, t.overdue, now, deps.calendar)) for t in items]
    base = {k: v for k, v in raw.items() if v}
    return render(
        request,
        "inbox.html",
        status=422 if error else 200,
        rows=rows,
        filters=raw,
        status_choice=status_choice,
        statuses=STATUSES,
        error=error,
        page=page_no,
        more=more,
        base=base,
    )


async def _extras(session: AsyncSession, p: Person, detail: TicketDetail, deps: Any) -> dict[str, Any]:
    """What the page shows beyond the API's detail: reason labels, staff rating, people, choices for the forms."""
    evaluation = await session.get(Evaluation, detail.evaluation.id)
    ticket = await session.get(Ticket, detail.id)
    if not (evaluation is not None and ticket is not None):
        raise BrokenInvariant("evaluation is not None and ticket is not None")
    reasons = [
        (code, (deps.catalogue.get(code).label if deps.catalogue.get(code) else ""))
        for code in detail.evaluation.reasons
    ]
    people = await audit.people_of_events(session, [e.id for e in detail.events])
    codes = {e.actor_org for e in detail.events if e.actor_org}
    org_names = (
        {
            o.code: o.name
            for o in (await session.exec(select(Organisation).where(col(Organisation.code).in_(codes)))).all()
        }
        if codes
        else {}
    )
    units: list[Organisation] = []
    consultable: list[Organisation] = []
    if "transfer" in detail.allowed_actions:
        region = detail.region_code
        where = (
            col(Organisation.region_code).startswith(region[:4])
            if is_city_level(region)
            else or_(
                col(Organisation.region_code) == region,
                (col(Organisation.kind) == "platform_builder") & (col(Organisation.region_code) == city_of(region)),
            )
        )
        units = list(
            (
                await session.exec(
                    select(Organisation)
                    .where(col(Organisation.kind).in_(("unit", "platform_builder")), where)
                    .order_by(col(Organisation.code))
                )
            ).all()
        )
        if ticket.unit_org_id is not None and all(u.id != ticket.unit_org_id for u in units):
            proposed = await session.get(Organisation, ticket.unit_org_id)
            if proposed is not None:
                units.insert(0, proposed)
    if "consult" in detail.allowed_actions:
        consultable = list(
            (
                await session.exec(
                    select(Organisation)
                    .where(
                        col(Organisation.region_code).startswith(detail.region_code[:4]),
                        Organisation.kind != "operator",
                        Organisation.id != p.org.id,
                    )
                    .order_by(col(Organisation.code))
                )
            ).all()
        )
    requested = next(
        (e.data.get("working_days") for e in reversed(detail.events) if e.action == "request_extension"), None
    )
    return {
        "org_names": org_names,
        "reasons": reasons,
        "staff_id": evaluation.staff_id,
        "staff_level": evaluation.staff_level,
        "people": people,
        "units": units,
        "proposed_unit_id": ticket.unit_org_id,
        "consultable": consultable,
        "requested_days": requested if isinstance(requested, int) else None,
    }


def _room(detail: TicketDetail, signature: str, reply: str) -> dict[str, Any]:
    """The reply's remaining length: two SMS segments with the notice around it, or the field's limit."""
    used = len(reply.encode("utf-16-le")) // 2
    sms = detail.citizen is not None and detail.citizen.reachable_by == "sms"
    limit = min(reply_room(signature), REPLY_MAX) if sms else REPLY_MAX
    return {"sms": sms, "limit": limit, "left": limit - used}


async def _page(
    request: web.Request,
    p: Person,
    ticket_id: int,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    revealed: str | None = None,
    done: str | None = None,
) -> web.Response:
    deps = request.config_dict[DEPS]
    async with request.config_dict[STORE].transaction() as session:
        detail = await ticket_detail(session, caller=p.caller, ticket_id=ticket_id, deps=deps)
        extras = await _extras(session, p, detail, deps)
    now = deps.clock.now()
    left, overdue = days_left(detail.due_at, detail.overdue, now, deps.calendar)
    values = values or {}
    return render(
        request,
        "ticket.html",
        status=status,
        t=detail,
        errors=errors or {},
        values=values,
        revealed=revealed,
        done=done if done in texts.ACTION or done == "reveal" else None,
        days=left,
        overdue=overdue,
        room=_room(detail, deps.settings.sms_signature, str(values.get("reply", ""))),
        may_reveal=p.caller.org_id is not None
        and detail.unit_org is not None
        and detail.unit_org.code == p.org.code
        and detail.status in ("accepted", "in_progress", "extension_requested")
        and detail.citizen is not None,
        **extras,
    )


@routes.get(r"/tickets/{id:\d+}")
async def ticket_page(request: web.Request) -> web.StreamResponse:
    p = person(request)
    return await _page(request, p, _ticket_id(request), done=request.query.get("done"))


def _action_body(data: Any) -> dict[str, Any]:
    """The form as the API's action body: empty fields left out, numbers as numbers, lists as lists."""
    body: dict[str, Any] = {}
    for key in data.keys():
        if key in ("csrf_token", "orgs"):
            continue
        value = str(data.get(key, "")).strip()
        if not value:
            continue
        if key in _INT_FIELDS:
            body[key] = int(value) if value.isdigit() and len(value) <= 10 else value
        else:
            body[key] = value
    orgs = [str(v).strip() for v in data.getall("orgs", []) if str(v).strip()]
    if orgs:
        body["orgs"] = orgs
    return body


@routes.post(r"/tickets/{id:\d+}/actions")
async def act(request: web.Request) -> web.StreamResponse:
    p = person(request)
    ticket_id = _ticket_id(request)
    data = await form(request)
    body = _action_body(data)
    name = body.get("action")
    if not isinstance(name, str) or name not in ACTION_NAMES:
        raise PageError(422, "未知的操作。请从工单页面上的表单提交。")
    values = {k: v for k, v in body.items() if k != "action"}
    try:
        action = ActionIn.model_validate(body).root
    except ValidationError as exc:
        message, _ = texts.validation_text(exc, prefix=name)
        return await _page(request, p, ticket_id, status=422, errors={name: message}, values=values)
    deps = request.config_dict[DEPS]
    try:
        async with request.config_dict[STORE].transaction() as session:
            event = await apply_action(session, ticket_id=ticket_id, action=action, actor=p.caller, deps=deps)
            audit.record(
                session,
                kind="ticket_action",
                at=event.at,
                user=p.user,
                address=client_address(request),
                ticket_id=ticket_id,
                event_id=event.id,
                action=name,
            )
    except TicketNotFound:
        raise
    except DomainError as exc:
        async with request.config_dict[STORE].transaction() as session:
            ticket = await session.get(Ticket, ticket_id)
        return await _page(
            request,
            p,
            ticket_id,
            status=exc.status,
            values=values,
            errors={name: texts.refusal(exc, action=name, ticket=ticket)},
        )
    if event.action == "resolve":
        request.config_dict[DISPATCHER].wake()
    raise web.HTTPSeeOther(f"/console/tickets/{ticket_id}?done={name}")


@routes.post(r"/tickets/{id:\d+}/contact")
async def reveal(request: web.Request) -> web.StreamResponse:
    """The evaluator's full number for the handling unit: logged twice over (contact_access and the audit)."""
    p = person(request)
    ticket_id = _ticket_id(request)
    await form(request)
    deps = request.config_dict[DEPS]
    try:
        async with request.config_dict[STORE].transaction() as session:
            contact = await read_contact(session, caller=p.caller, ticket_id=ticket_id, deps=deps)
            audit.record(
                session,
                kind="number_reveal",
                at=deps.clock.now(),
                user=p.user,
                address=client_address(request),
                ticket_id=ticket_id,
                masked=contact.phone_masked,
            )
    except TicketNotFound:
        raise
    except DomainError as exc:
        return await _page(
            request, p, ticket_id, status=exc.status, errors={"reveal": texts.refusal(exc, action="contact")}
        )
    return await _page(request, p, ticket_id, revealed=contact.phone, done="reveal")


@routes.get(r"/tickets/{id:\d+}/reply-length")
async def reply_length(request: web.Request) -> web.StreamResponse:
    """htmx: the remaining length as the clerk types (the same count the resolve action enforces)."""
    p = person(request)
    ticket_id = _ticket_id(request)
    deps = request.config_dict[DEPS]
    async with request.config_dict[STORE].transaction() as session:
        detail = await ticket_detail(session, caller=p.caller, ticket_id=ticket_id, deps=deps)
    room = _room(detail, deps.settings.sms_signature, request.query.get("reply", "")[:2000])
    from gateway.console.web import fragment

    return fragment(request, "_reply_length.html", room=room)


__all__ = ["routes", "days_left", "date"]
