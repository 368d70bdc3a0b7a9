"""Department API for cases and evaluations: thin views over the evaluation service."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlmodel import col, select

from gateway.evaluations.errors import Forbidden
from gateway.evaluations.schemas import CaseIn, CaseOut, EvaluationIn, EvaluationOut, InvitationOut
from gateway.evaluations.service import Intake, invitation_by_token, record_rating, report_case
from gateway.orgs import is_above
from gateway.store.models import EvaluationDecision, Evaluation, Invitation, Organisation, OutboundMessage, Ticket
from gateway.web.http import ApiError, read_json, require_caller
from gateway.web.keys import DEPS, DISPATCHER, STORE

routes = web.RouteTableDef()


def _invitation_out(request: web.Request, invitation: Invitation) -> InvitationOut:
    deps = request.app[DEPS]
    url = deps.rating_url(invitation.token)
    return InvitationOut(
        token=invitation.token, rating_url=url, qr_png_url=f"{url}/qr.png", qr_svg_url=f"{url}/qr.svg",
        expires_at=invitation.expires_at, expires_provisional=invitation.expires_provisional,
        kind=invitation.kind, status=invitation.status,
    )


def _message_out(message: OutboundMessage) -> dict[str, Any]:
    return {"id": message.id, "channel": message.channel, "status": message.status,
            "not_before": message.not_before.isoformat() if message.not_before else None}


@routes.post("/api/v1/cases")
async def report_case_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    data = await read_json(request, CaseIn)
    async with request.app[STORE].transaction() as session:
        intake: Intake = await report_case(session, caller=caller, data=data, deps=request.app[DEPS])
    if intake.created:
        request.app[DISPATCHER].wake()
    answer = CaseOut(
        case_id=intake.case.id,  # type: ignore[arg-type]
        created=intake.created,
        invitation=_invitation_out(request, intake.invitation),
        messages_queued=[_message_out(m) for m in intake.messages],
    )
    return web.json_response(answer.model_dump(mode="json"), status=201 if intake.created else 200)


@routes.post("/api/v1/evaluations")
async def submit_evaluation(request: web.Request) -> web.Response:
    """A window evaluator device or phone staff records a rating on the citizen's behalf."""
    caller = await require_caller(request)
    data = await read_json(request, EvaluationIn)
    deps = request.app[DEPS]
    async with request.app[STORE].transaction() as session:
        invitation = await invitation_by_token(session, data.token)
        unit = await session.get(Organisation, invitation.org_id)
        assert unit is not None
        if not await is_above(session, caller, unit):
            raise Forbidden("this API key may not rate services of that organisation")
        rated = await record_rating(
            session, invitation=invitation, level=data.level, channel=data.channel, deps=deps,
            reasons=data.reasons, text=data.text, staff_level=data.staff_level, case_no=data.case_no,
            submitted_by_org_id=caller.org_id,
        )
    request.app[DISPATCHER].wake()
    out = _evaluation_out(rated.evaluation, invitation.token, rated.ticket.id if rated.ticket else None, counts=True)
    return web.json_response(out.model_dump(mode="json"), status=201)


def _evaluation_out(evaluation: Evaluation, token: str, ticket_id: int | None, *, counts: bool) -> EvaluationOut:
    return EvaluationOut(
        id=evaluation.id, invitation_token=token, scope=evaluation.scope, level=evaluation.level,  # type: ignore[arg-type]
        reasons=evaluation.reason_codes, text=evaluation.content, staff_level=evaluation.staff_level,
        channel=evaluation.channel, created_at=evaluation.created_at, ticket_id=ticket_id, counts=counts,
    )


@routes.get("/api/v1/evaluations")
async def list_evaluations(request: web.Request) -> web.Response:
    """Evaluations within the caller's jurisdiction, newest first; phone numbers are never shown."""
    caller = await require_caller(request)
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), 500)
        before_id = int(request.query["before_id"]) if "before_id" in request.query else None
    except ValueError:
        raise ApiError(422, "invalid", "limit and before_id must be whole numbers", field="limit") from None
    query = (
        select(Evaluation, Invitation, Ticket.id)
        .join(Invitation, Invitation.id == Evaluation.invitation_id)
        .outerjoin(Ticket, Ticket.evaluation_id == Evaluation.id)
        .order_by(col(Evaluation.id).desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(col(Evaluation.id) < before_id)
    if caller.kind == "city_bureau":
        query = query.where(col(Invitation.region_code).startswith(caller.region_code[:4]))
    elif caller.kind == "county_dept":
        query = query.where(Invitation.region_code == caller.region_code)
    elif caller.kind != "operator":
        query = query.where(Invitation.org_id == caller.org_id)
    async with request.app[STORE].transaction() as session:
        rows = (await session.exec(query)).all()
        ids = [e.id for e, _, _ in rows]
        voided = set((await session.exec(select(EvaluationDecision.evaluation_id).where(col(EvaluationDecision.evaluation_id).in_(ids)))).all()) if ids else set()
    items = [_evaluation_out(e, inv.token, tid, counts=e.id not in voided).model_dump(mode="json") for e, inv, tid in rows]
    return web.json_response({"items": items, "next_before_id": items[-1]["id"] if len(items) == limit else None})

