"""Department API for callback campaigns: thin views over gateway.callbacks.service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel

from gateway.callbacks.errors import CampaignNotFound
from gateway.callbacks.schemas import AnswerIn, AnswerOut, CampaignIn, CampaignRead, TargetPage, TargetQuery
from gateway.callbacks.service import (
    campaign_read,
    cancel_campaign,
    create_campaign,
    list_targets,
    pause_campaign,
    record_phone_answer,
    resume_campaign,
    visible_campaign,
)
from gateway.orgs import Caller
from gateway.store.models import Campaign
from gateway.tickets.schemas import MAX_ID
from gateway.web.http import parse_query, read_json, require_caller
from gateway.web.keys import DEPS, DISPATCHER, STORE
from gateway.web.operations import Operation, PathParam

routes = web.RouteTableDef()

_CAMPAIGN_ID = PathParam("id", "the campaign id", maximum=MAX_ID, example=1)


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise CampaignNotFound(None)
    return int(raw)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


@routes.post("/api/v1/campaigns")
async def create_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    body = await read_json(request, CampaignIn)
    async with request.app[STORE].transaction() as session:
        campaign, not_targeted = await create_campaign(session, caller=caller, body=body, deps=request.app[DEPS])
        read = await campaign_read(session, campaign=campaign, not_targeted=not_targeted)
    return _json(read, status=201)


@routes.get(r"/api/v1/campaigns/{id:\d+}")
async def detail_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    campaign_id = _campaign_id(request)
    async with request.app[STORE].transaction() as session:
        campaign = await visible_campaign(session, caller=caller, campaign_id=campaign_id)
        read = await campaign_read(session, campaign=campaign)
    return _json(read)


@routes.get(r"/api/v1/campaigns/{id:\d+}/targets")
async def targets_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    campaign_id = _campaign_id(request)
    query = parse_query(request, TargetQuery)
    async with request.app[STORE].transaction() as session:
        campaign = await visible_campaign(session, caller=caller, campaign_id=campaign_id)
        page = await list_targets(session, campaign=campaign, query=query)
    return _json(page)


Action = Callable[..., Awaitable[Campaign]]


async def _act(request: web.Request, action: Action) -> web.Response:
    caller: Caller = await require_caller(request)
    campaign_id = _campaign_id(request)
    async with request.app[STORE].transaction() as session:
        campaign = await action(session, caller=caller, campaign_id=campaign_id, deps=request.app[DEPS])
        read = await campaign_read(session, campaign=campaign)
    return _json(read)


@routes.post(r"/api/v1/campaigns/{id:\d+}/pause")
async def pause_view(request: web.Request) -> web.Response:
    return await _act(request, pause_campaign)


@routes.post(r"/api/v1/campaigns/{id:\d+}/resume")
async def resume_view(request: web.Request) -> web.Response:
    return await _act(request, resume_campaign)


@routes.post(r"/api/v1/campaigns/{id:\d+}/cancel")
async def cancel_view(request: web.Request) -> web.Response:
    return await _act(request, cancel_campaign)


@routes.post(r"/api/v1/campaigns/{id:\d+}/answers")
async def answer_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    campaign_id = _campaign_id(request)
    body = await read_json(request, AnswerIn)
    async with request.app[STORE].transaction() as session:
        answer = await record_phone_answer(
            session, caller=caller, campaign_id=campaign_id, body=body, deps=request.app[DEPS]
        )
    request.app[DISPATCHER].wake()
    return _json(answer)


_ACTION_TEXT = {
    "pause": "Stop sending. Survey messages still waiting in the outbox are taken back; resume sends them.",
    "resume": "Carry on sending a paused campaign (from its start time, if that is still ahead).",
    "cancel": (
        "Send nothing more: pending targets and waiting messages are dropped (`skipped`). Questions already "
        "sent still take their answers, and expire as no answer."
    ),
}

OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/campaigns",
        "Start a callback-survey campaign (回访, Art. 15(五))",
        tag="campaigns",
        operation_id="createCampaign",
        body=CampaignIn,
        response=CampaignRead,
        status=201,
        description=(
            "Approval departments only. Targets: the resolved tickets awaiting their callback in your "
            "jurisdiction that match the filters (or the explicit `ticket_ids`) and are not already in an "
            "open callback of the same round. Each citizen is asked once, on their own channel (the bot if "
            "linked, else SMS), with opt-outs, quiet hours and rate limits honoured. 422 `no_targets` when "
            "nothing matches."
        ),
        errors=(400, 401, 403, 415, 422),
    ),
    Operation(
        "GET",
        "/api/v1/campaigns/{id}",
        "Read a campaign's progress and satisfaction rate",
        tag="campaigns",
        operation_id="getCampaign",
        path_params=(_CAMPAIGN_ID,),
        response=CampaignRead,
        description="Another department's campaign answers 404.",
        errors=(401, 404),
    ),
    Operation(
        "GET",
        "/api/v1/campaigns/{id}/targets",
        "List a campaign's targets (who answered what)",
        tag="campaigns",
        operation_id="listCampaignTargets",
        path_params=(_CAMPAIGN_ID,),
        query=TargetQuery,
        response=TargetPage,
        description="In id order; page with `after_id`. `status=failed,skipped` lists the citizens to call.",
        errors=(401, 404, 422),
    ),
    *(
        Operation(
            "POST",
            f"/api/v1/campaigns/{{id}}/{name}",
            f"{name.capitalize()} a campaign",
            tag="campaigns",
            operation_id=f"{name}Campaign",
            path_params=(_CAMPAIGN_ID,),
            response=CampaignRead,
            description=f"{text} 409 when the campaign's status does not allow it.",
            errors=(401, 404, 409),
        )
        for name, text in _ACTION_TEXT.items()
    ),
    Operation(
        "POST",
        "/api/v1/campaigns/{id}/answers",
        "Enter an answer taken by phone",
        tag="campaigns",
        operation_id="answerCampaignTarget",
        path_params=(_CAMPAIGN_ID,),
        body=AnswerIn,
        response=AnswerOut,
        description=(
            "Phone staff record what the evaluator said, for any target not yet answered (also those the "
            "survey could not reach). Recorded on the ticket as its callback result with channel `phone`; an "
            "unsatisfied answer then waits for your judgment (`redo` once, or `close`). 409 when the target "
            "or the ticket already has its result."
        ),
        errors=(400, 401, 404, 409, 415, 422),
    ),
]
