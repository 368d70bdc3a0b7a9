"""Department API for cases and evaluations: thin views over the evaluation service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import and_, exists, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.errors import BrokenInvariant, DomainError
from gateway.evaluations.errors import InvitationNotFound
from gateway.evaluations.intake import CaseAnswer
from gateway.evaluations.reading import addenda_of, addenda_out, current_of
from gateway.evaluations.schemas import (
    MAX_CASES_PER_BATCH,
    CaseBatchIn,
    CaseBatchOut,
    CaseIn,
    CaseOut,
    EvaluationIn,
    EvaluationOut,
    EvaluationPage,
    EvaluationQuery,
)
from gateway.evaluations.service import invitation_by_token, may_rate_for, record_rating
from gateway.privacy import redact
from gateway.store.models import (
    Evaluation,
    EvaluationAddendum,
    EvaluationDecision,
    Invitation,
    ServiceCase,
    Ticket,
)
from gateway.web.http import ApiError, nul_at, read_json, read_large_json, require_caller, validation_error
from gateway.web.keys import DEPS, DISPATCHER, STORE
from gateway.web.operations import Operation
from gateway.wiring.cases import CASE_WRITER

routes = web.RouteTableDef()


@routes.post("/api/v1/cases")
async def report_case_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    data = await read_json(request, CaseIn)
    # Reports arriving at the same moment share one transaction; the answer is this case's alone.
    outcome = await request.app[CASE_WRITER].report(caller, data)
    if isinstance(outcome, DomainError):
        raise outcome
    if outcome.created:
        request.app[DISPATCHER].wake()
    return web.json_response(_case_out(request, outcome), status=201 if outcome.created else 200)


# A case is about 400 bytes of JSON: a full batch stays well under this.
MAX_BATCH_BYTES = 4 * 1024 * 1024


@routes.post("/api/v1/cases/batch")
async def report_cases_view(request: web.Request) -> web.Response:
    """Many cases in one request, each checked and answered on its own, all written in one transaction."""
    caller = await require_caller(request)
    body = await read_large_json(request, max_bytes=MAX_BATCH_BYTES)
    raw_cases = body.get("cases")
    unknown = sorted(set(body) - {"cases"})
    if unknown:
        raise ApiError(422, "invalid", f"{unknown[0]}: Extra inputs are not permitted", field=unknown[0])
    if not isinstance(raw_cases, list):
        raise ApiError(422, "invalid", "cases: send a list of 1 to 1000 cases", field="cases")
    if not raw_cases:
        raise ApiError(422, "invalid", "cases: the list is empty", field="cases")
    if len(raw_cases) > MAX_CASES_PER_BATCH:
        raise ApiError(
            413,
            "payload_too_large",
            f"cases: at most {MAX_CASES_PER_BATCH} cases per request, {len(raw_cases)} sent; send the rest in another",
            field="cases",
        )
    results: list[dict[str, Any] | None] = [None] * len(raw_cases)
    valid: list[tuple[int, CaseIn]] = []
    for index, raw in enumerate(raw_cases):
        refused = _item_error(raw)
        if refused is None:
            try:
                valid.append((index, CaseIn.model_validate(raw)))
                continue
            except ValidationError as exc:
                refused = validation_error(exc)
        results[index] = _item_refused(index, raw, refused.status, _error_body(refused))
    cases = [(index, data, caller) for index, data in valid]
    outcomes = await request.app[CASE_WRITER].write(cases) if cases else {}
    created = existing = 0
    for index, data in valid:
        outcome = outcomes[index]
        if isinstance(outcome, DomainError):
            error = {"code": outcome.code, "message": outcome.message, "field": outcome.field}
            results[index] = _item_refused(index, {"case_no": data.case_no}, outcome.status, error)
            continue
        created += outcome.created
        existing += not outcome.created
        results[index] = {
            "index": index,
            "case_no": data.case_no,
            "status": 201 if outcome.created else 200,
            "case": _case_out(request, outcome),
            "error": None,
        }
    if created:
        request.app[DISPATCHER].wake()
    answer = {
        "results": results,
        "created": created,
        "existing": existing,
        "refused": len(results) - created - existing,
    }
    return web.json_response(answer)


def _item_error(raw: object) -> ApiError | None:
    if not isinstance(raw, dict):
        return ApiError(422, "invalid", "each case must be a JSON object")
    where = nul_at(raw)
    if where is not None:
        return ApiError(422, "invalid", f"{where}: must not contain the NUL character (\\u0000)", field=where)
    return None


def _error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message, "field": error.field}
    if error.details is not None:
        body["details"] = error.details
    return body


def _item_refused(index: int, raw: object, status: int, error: dict[str, Any]) -> dict[str, Any]:
    case_no = raw.get("case_no") if isinstance(raw, dict) else None
    return {
        "index": index,
        "case_no": case_no if isinstance(case_no, str) else None,
        "status": status,
        "case": None,
        "error": error,
    }


def _case_out(request: web.Request, answer: CaseAnswer) -> dict[str, Any]:
    """The answer of one case, as `CaseOut` describes it (built directly: a batch has a thousand)."""
    url = request.app[DEPS].rating_url(answer.invitation.token)
    invitation = answer.invitation
    return {
        "case_id": answer.case_id,
        "created": answer.created,
        "invitation": {
            "token": invitation.token,
            "rating_url": url,
            "qr_png_url": f"{url}/qr.png",
            "qr_svg_url": f"{url}/qr.svg",
            "expires_at": _json_time(invitation.expires_at),
            "expires_provisional": invitation.expires_provisional,
            "kind": invitation.kind,
            "status": invitation.status,
        },
        "messages_queued": [
            {
                "id": m.id,
                "channel": m.channel,
                "status": m.status,
                "not_before": m.not_before.isoformat() if m.not_before else None,
            }
            for m in answer.messages
        ],
    }


def _json_time(at: datetime) -> str:
    # As pydantic writes an aware time in JSON: UTC as "Z".
    text = at.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


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
        "/api/v1/cases/batch",
        "Report many finished cases at once (a nightly report)",
        tag="cases",
        operation_id="reportCases",
        body=CaseBatchIn,
        response=CaseBatchOut,
        status=200,
        errors=(400, 401, 413, 415, 422),
        description=(
            f"Up to {MAX_CASES_PER_BATCH} cases, each checked as by POST /api/v1/cases and answered on its own "
            "in `results` (same order): `status` 201 created, 200 reported before with the same content, or "
            "the 4xx that case alone would get, with `error`. A refused case leaves nothing behind and never "
            "holds back the others; the accepted ones, their invitations and prompts commit together. "
            "Idempotent per case on (org, case_no), so a whole batch may be sent again after a timeout."
        ),
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
