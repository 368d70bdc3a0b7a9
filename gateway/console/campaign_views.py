"""Callback campaigns (回访) in the console: choose resolved tickets, start, watch the progress live
(htmx polling, a plain reload without JavaScript), pause, resume, cancel — through gateway.callbacks.service."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlmodel import col, select

from gateway.callbacks.errors import CampaignError, CampaignNotFound
from gateway.callbacks.schemas import CampaignFilters, CampaignIn
from gateway.callbacks.service import (
    LIVE_STATUSES,
    campaign_read,
    cancel_campaign,
    create_campaign,
    pause_campaign,
    resume_campaign,
    visible_campaign,
)
from gateway.callbacks.service import (
    _conditions as campaign_conditions,  # the campaign's own filter, so the preview matches what is started
)
from gateway.console import audit, texts
from gateway.console.web import PageError, Person, client_address, form, fragment, person, render
from gateway.orgs import ticket_scope
from gateway.store.models import Campaign, Invitation, Ticket
from gateway.tickets.schemas import MAX_ID
from gateway.tickets.workflow import RESOLVED
from gateway.web.keys import DEPS, STORE

routes = web.RouteTableDef()

PREVIEW_LIMIT = 200
_FILTER_FIELDS = ("resolved_from", "resolved_to", "region_code", "unit", "level")
_ACTIONS = {"pause": pause_campaign, "resume": resume_campaign, "cancel": cancel_campaign}


def _approval(p: Person) -> None:
    if not p.caller.is_approval:
        raise PageError(403, "回访活动由审批部门（市行政审批服务局或县区行政审批部门）发起（第十五条第五项）。")


def _filters(raw: dict[str, str]) -> dict[str, Any]:
    return {k: (int(v) if k == "level" and v.isdigit() else v) for k, v in raw.items() if v}


async def _preview(request: web.Request, p: Person, filters: CampaignFilters) -> list[tuple[Ticket, str]]:
    deps = request.config_dict[DEPS]
    async with request.config_dict[STORE].transaction() as session:
        conditions = await campaign_conditions(session, filters, deps.calendar.tz)
        rows = await session.exec(
            select(Ticket, Invitation.item_name)
            .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
            .where(
                ticket_scope(p.caller),
                Ticket.approval_org_id == p.caller.org_id,
                Ticket.status == RESOLVED,
                *conditions,
            )
            .order_by(col(Ticket.resolved_at))
            .limit(PREVIEW_LIMIT)
        )
        return list(rows.all())


async def _list_page(
    request: web.Request,
    p: Person,
    *,
    status: int = 200,
    error: str = "",
    raw: dict[str, str] | None = None,
    name: str = "",
) -> web.Response:
    raw = raw if raw is not None else {k: request.query.get(k, "").strip() for k in _FILTER_FIELDS}
    candidates: list[tuple[Ticket, str]] = []
    try:
        filters = CampaignFilters.model_validate(_filters(raw))
        candidates = await _preview(request, p, filters)
    except ValidationError as exc:
        error = error or texts.validation_text(exc)[0]
        status = 422
    except CampaignError as exc:
        error = error or texts.campaign_refusal(exc)
        status = exc.status
    async with request.config_dict[STORE].transaction() as session:
        campaigns = (
            await session.exec(
                select(Campaign).where(Campaign.org_id == p.caller.org_id).order_by(col(Campaign.id).desc()).limit(50)
            )
        ).all()
        reads = [await campaign_read(session, campaign=c) for c in campaigns]
    return render(
        request,
        "campaigns.html",
        status=status,
        campaigns=reads,
        candidates=candidates,
        filters=raw,
        error=error,
        name=name,
        limit=PREVIEW_LIMIT,
    )


@routes.get("/campaigns")
async def campaigns(request: web.Request) -> web.StreamResponse:
    p = person(request)
    _approval(p)
    return await _list_page(request, p)


@routes.post("/campaigns")
async def start(request: web.Request) -> web.StreamResponse:
    p = person(request)
    _approval(p)
    data = await form(request)
    raw = {k: str(data.get(k, "")).strip() for k in _FILTER_FIELDS}
    name = str(data.get("name", "")).strip()
    ids = [str(v) for v in data.getall("ticket_ids", [])]
    if not ids:
        return await _list_page(request, p, status=422, error="请至少勾选一张工单。", raw=raw, name=name)
    if any(not v.isdigit() or len(v) > 10 for v in ids):
        raise PageError(422, "工单编号有误。")
    deps = request.config_dict[DEPS]
    try:
        body = CampaignIn.model_validate({**_filters(raw), "name": name, "ticket_ids": [int(v) for v in ids]})
    except ValidationError as exc:
        return await _list_page(request, p, status=422, error=texts.validation_text(exc)[0], raw=raw, name=name)
    try:
        async with request.config_dict[STORE].transaction() as session:
            campaign, _ = await create_campaign(session, caller=p.caller, body=body, deps=deps)
            audit.record(
                session,
                kind="campaign_action",
                at=deps.clock.now(),
                user=p.user,
                address=client_address(request),
                campaign_id=campaign.id,
                action="start",
            )
    except CampaignError as exc:
        return await _list_page(request, p, status=exc.status, error=texts.campaign_refusal(exc), raw=raw, name=name)
    raise web.HTTPSeeOther(f"/console/campaigns/{campaign.id}")


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise CampaignNotFound(None)
    return int(raw)


async def _read(request: web.Request, p: Person, campaign_id: int) -> Any:
    async with request.config_dict[STORE].transaction() as session:
        campaign = await visible_campaign(session, caller=p.caller, campaign_id=campaign_id)
        return await campaign_read(session, campaign=campaign)


@routes.get(r"/campaigns/{id:\d+}")
async def campaign_page(request: web.Request) -> web.StreamResponse:
    p = person(request)
    read = await _read(request, p, _campaign_id(request))
    return render(request, "campaign.html", c=read, error="", live=read.status in LIVE_STATUSES)


@routes.get(r"/campaigns/{id:\d+}/progress")
async def progress(request: web.Request) -> web.StreamResponse:
    """htmx polls this every few seconds while the campaign is live; the fragment stops polling after."""
    p = person(request)
    read = await _read(request, p, _campaign_id(request))
    return fragment(request, "_progress.html", c=read, live=read.status in LIVE_STATUSES)


@routes.post(r"/campaigns/{id:\d+}/{action:(pause|resume|cancel)}")
async def campaign_action(request: web.Request) -> web.StreamResponse:
    p = person(request)
    campaign_id = _campaign_id(request)
    await form(request)
    name = request.match_info["action"]
    deps = request.config_dict[DEPS]
    try:
        async with request.config_dict[STORE].transaction() as session:
            await _ACTIONS[name](session, caller=p.caller, campaign_id=campaign_id, deps=deps)
            audit.record(
                session,
                kind="campaign_action",
                at=deps.clock.now(),
                user=p.user,
                address=client_address(request),
                campaign_id=campaign_id,
                action=name,
            )
    except CampaignNotFound:
        raise
    except CampaignError as exc:
        read = await _read(request, p, campaign_id)
        return render(
            request,
            "campaign.html",
            status=exc.status,
            c=read,
            live=read.status in LIVE_STATUSES,
            error=texts.campaign_refusal(exc, action=name),
        )
    raise web.HTTPSeeOther(f"/console/campaigns/{campaign_id}")
