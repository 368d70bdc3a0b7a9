"""Department API for cases and evaluations: thin views over the evaluation service."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import and_, exists, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.errors import BrokenInvariant
from gateway.evaluations.errors import InvitationNotFound
from gateway.evaluations.reading import addenda_of, addenda_out, current_of
from gateway.evaluations.schemas import (
    CaseIn,
    CaseOut,
    EvaluationIn,
    EvaluationOut,
    EvaluationPage,
    EvaluationQuery,
    InvitationOut,
)
from gateway.evaluations.service import Intake, invitation_by_token, may_rate_for, record_rating, report_case
from gateway.orgs import Caller
from gateway.privacy import redact
from gateway.store.models import (
    Evaluation,
    EvaluationAddendum,
    EvaluationDecision,
    Invitation,
    OutboundMessage,
    ServiceCase,
    Ticket,
)
from gateway.web.http import read_json, require_caller, validation_error
from gateway.web.keys import DEPS, DISPATCHER, STORE
from gateway.web.operations import Operation

routes = web.RouteTableDef()


def _invitation_out(request: web.Request, invitation: Invitation) -> InvitationOut:
    deps = request.app[DEPS]
    url = deps.rating_url(invitation.token)
    return InvitationOut(
        token=invitation.token,
        rating_url=url,
        qr_png_url=f"{url}/qr.png",
        qr_svg_url=f"{url}/qr.svg",
        expires_at=invitation.expires_at,
        expires_provisional=invitation.expires_provisional,
        kind=invitation.kind,
        status=invitation.status,
    )


def _message_out(message: OutboundMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel,
        "status": message.status,
        "not_before": message.not_before.isoformat() if message.not_before else None,
    }


@routes.post("/api/v1/cases")
async def report_case_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    data = await read_json(request, CaseIn)
    intake = await _report_once(request, caller, data)
    if intake.created:
        request.app[DISPATCHER].wake()
    answer = CaseOut(
        case_id=intake.case.id,
        created=intake.created,
        invitation=_invitation_out(request, intake.invitation),
        messages_queued=[_message_out(m) for m in intake.messages],
    )
    return web.json_response(answer.model_dump(mode="json"), status=201 if intake.created else 200)


async def _report_once(request: web.Request, caller: Caller, data: CaseIn) -> Intake:
    # Concurrent reports of the same case (or of the same citizen's first cases) collide on unique
    # keys; the loser retries once more and then finds the winner's rows: the answer is idempotent.
    for attempt in range(3):
        try:
            async with request.app[STORE].transaction() as session:
                return await report_case(session, caller=caller, data=data, deps=request.app[DEPS])
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@routes.post("/api/v1/evaluations")
async def submit_evaluation(request: web.Request) -> web.Response:
    """A window evaluator device or phone staff records a rating on the citizen's behalf."""
    caller = await require_caller(request)
    data = await read_json(request, EvaluationIn)
    deps = request.app[DEPS]
    async with request.app[STORE].transaction() as session:
        invitation = await invitation_by_token(session, data.token)
        if not await may_rate_for(session, caller, invitation):
            # Outside the caller's jurisdiction, as on every other route: not found, saying nothing more.
            raise InvitationNotFound("no such rating link")
        rated = await record_rating(
            session,
            invitation=invitation,
            level=data.level,
            channel=data.channel,
            deps=deps,
            reasons=data.reasons,
            text=data.text,
            staff_level=data.staff_level,
            case_no=data.case_no,
            submitted_by_org_id=caller.org_id,
        )
        applies = await _applies_to(session, [rated.evaluation])
    request.app[DISPATCHER].wake()
    if rated.evaluation.id is None:
        raise BrokenInvariant("evaluation.id is missing")
    out = _evaluation_out(
        rated.evaluation,
        invitation.token,
        rated.ticket.id if rated.ticket else None,
        counts=True,
        applies_to=applies[rated.evaluation.id],
        addenda=[],
    )
    return web.json_response(out.model_dump(mode="json"), status=201)


def _evaluation_out(
    evaluation: Evaluation,
    token: str,
    ticket_id: int | None,
    *,
    counts: bool,
    applies_to: list[str],
    addenda: list[EvaluationAddendum],
) -> EvaluationOut:
    return EvaluationOut(
        applies_to=applies_to,
        id=evaluation.id,
        invitation_token=token,
        scope=evaluation.scope,
        level=evaluation.level,
        reasons=evaluation.reason_codes,
        text=redact(evaluation.content),
        staff_level=evaluation.staff_level,
        channel=evaluation.channel,
        created_at=as_utc(evaluation.created_at),
        ticket_id=ticket_id,
        counts=counts,
        addenda=addenda_out(addenda),
        current=current_of(evaluation, addenda),
    )


async def _applies_to(session: AsyncSession, evaluations: list[Evaluation]) -> dict[int, list[str]]:
    """The case numbers each evaluation covers: every case of its invitation, or its one theme item (Art. 11)."""
    invitation_ids = {e.invitation_id for e in evaluations}
    cases: dict[int, list[ServiceCase]] = {}
    if invitation_ids:
        rows = await session.exec(
            select(ServiceCase).where(col(ServiceCase.invitation_id).in_(invitation_ids)).order_by(col(ServiceCase.id))
        )
        for case in rows.all():
            cases.setdefault(case.invitation_id, []).append(case)
    result: dict[int, list[str]] = {}
    for e in evaluations:
        linked = cases.get(e.invitation_id, [])
        chosen = [c for c in linked if c.id == e.case_id] if e.scope != "all" else linked
        result[e.id] = [c.case_no for c in chosen]  # type: ignore[index]
    return result


@routes.get("/api/v1/evaluations")
async def list_evaluations(request: web.Request) -> web.Response:
    """Evaluations within the caller's jurisdiction, newest first, as they stand now; phone numbers are never shown."""
    caller = await require_caller(request)
    try:
        params = EvaluationQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc) from None
    query = (
        select(Evaluation, Invitation, Ticket.id)
        .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
        .outerjoin(Ticket, col(Ticket.evaluation_id) == Evaluation.id)
        .order_by(col(Evaluation.id).desc())
        .limit(params.limit)
    )
    if params.before_id is not None:
        query = query.where(col(Evaluation.id) < params.before_id)
    if params.token is not None:
        query = query.where(Invitation.token == params.token)
    if params.case_no is not None:
        # The case's own rating, or the rating of its batch or theme as a whole (not another item's).
        query = query.where(
            exists().where(
                col(ServiceCase.invitation_id) == col(Evaluation.invitation_id),
                col(ServiceCase.case_no) == params.case_no,
                or_(col(Evaluation.scope) == "all", col(Evaluation.case_id) == ServiceCase.id),
            )
        )
    if caller.kind == "city_bureau":
        query = query.where(col(Invitation.region_code).startswith(caller.region_code[:4]))
    elif caller.kind == "county_dept":
        query = query.where(Invitation.region_code == caller.region_code)
    elif caller.kind != "operator":
        # A unit sees the ratings of its own invitations and of the themes it took part in.
        query = query.where(
            or_(
                col(Invitation.org_id) == caller.org_id,
                exists().where(
                    and_(col(ServiceCase.invitation_id) == col(Invitation.id), col(ServiceCase.org_id) == caller.org_id)
                ),
            )
        )
    async with request.app[STORE].transaction() as session:
        rows = (await session.exec(query)).all()
        ids = [e.id for e, _, _ in rows if e.id is not None]
        voided = (
            set(
                (
                    await session.exec(
                        select(EvaluationDecision.evaluation_id).where(col(EvaluationDecision.evaluation_id).in_(ids))
                    )
                ).all()
            )
            if ids
            else set()
        )
        applies = await _applies_to(session, [e for e, _, _ in rows])
        addenda = await addenda_of(session, ids)
    items: list[EvaluationOut] = []
    for e, inv, tid in rows:
        if e.id is None:
            raise BrokenInvariant("evaluation.id is missing")
        items.append(
            _evaluation_out(
                e,
                inv.token,
                tid,
                counts=e.id not in voided,
                applies_to=applies[e.id],
                addenda=addenda[e.id],
            )
        )
    page = EvaluationPage(items=items, next_before_id=items[-1].id if len(items) == params.limit else None)
    return web.json_response(page.model_dump(mode="json"))


OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/cases",
        "Report a finished service case (办件)",
        tag="cases",
        operation_id="reportCase",
        body=CaseIn,
        response=CaseOut,
        status=201,
        errors=(400, 401, 403, 409, 415, 422),
        description="Idempotent on (org, case_no): the same report again answers 200 with the same invitation.",
        extra_responses={200: "Already reported with the same content"},
    ),
    Operation(
        "POST",
        "/api/v1/evaluations",
        "Record a rating on the citizen's behalf (evaluator device, phone staff)",
        tag="evaluations",
        operation_id="submitEvaluation",
        body=EvaluationIn,
        response=EvaluationOut,
        status=201,
        errors=(400, 401, 403, 404, 409, 410, 415, 422),
    ),
    Operation(
        "GET",
        "/api/v1/evaluations",
        "List evaluations in your jurisdiction",
        tag="evaluations",
        operation_id="listEvaluations",
        query=EvaluationQuery,
        response=EvaluationPage,
        errors=(401, 422),
        description=(
            "Each item keeps the rating as given and adds `addenda` (reasons, text or a staff rating given "
            "later, each with its time) and `current` (the effective values). Filter by `case_no` or `token`."
        ),
    ),
]
