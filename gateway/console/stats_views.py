"""Figures for the person's jurisdiction: evaluations per level, tickets per status, overdue tickets.

These are the counts the store holds today, scoped exactly as the API scopes evaluations and tickets.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import and_, func
from sqlmodel import col, select

from gateway.console.web import person, render
from gateway.evaluations.reasons import LEVEL_WORDS
from gateway.orgs import Caller, ticket_scope
from gateway.store.models import Evaluation, EvaluationDecision, Invitation, Ticket
from gateway.tickets.workflow import OPEN_STATUSES, STATUSES
from gateway.web.keys import DEPS, STORE

routes = web.RouteTableDef()


def evaluation_scope(caller: Caller):  # type: ignore[no-untyped-def]
    """The evaluations a caller sees (as GET /api/v1/evaluations)."""
    if caller.kind == "operator":
        return True
    if caller.kind == "city_bureau":
        return col(Invitation.region_code).startswith(caller.region_code[:4])
    if caller.kind == "county_dept":
        return Invitation.region_code == caller.region_code
    return Invitation.org_id == caller.org_id


@routes.get("/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    p = person(request)
    now = request.config_dict[DEPS].clock.now()
    voided = select(EvaluationDecision.evaluation_id).scalar_subquery()
    async with request.config_dict[STORE].transaction() as session:
        levels = dict(
            (
                await session.exec(
                    select(Evaluation.level, func.count())
                    .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
                    .where(evaluation_scope(p.caller), col(Evaluation.id).not_in(voided))
                    .group_by(col(Evaluation.level))
                )
            ).all()
        )
        voided_count = (
            await session.exec(
                select(func.count())
                .select_from(Evaluation)
                .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
                .where(evaluation_scope(p.caller), col(Evaluation.id).in_(voided))
            )
        ).one()
        statuses = dict(
            (
                await session.exec(
                    select(Ticket.status, func.count()).where(ticket_scope(p.caller)).group_by(Ticket.status)
                )
            ).all()
        )
        overdue = (
            await session.exec(
                select(func.count())
                .select_from(Ticket)
                .where(ticket_scope(p.caller), and_(col(Ticket.status).in_(OPEN_STATUSES), col(Ticket.due_at) <= now))
            )
        ).one()
    total = sum(levels.values())
    rows = [(level, LEVEL_WORDS[level], levels.get(level, 0)) for level in (5, 4, 3, 2, 1)]
    good = sum(n for level, _, n in rows if level >= 3)
    return render(
        request,
        "stats.html",
        rows=rows,
        total=total,
        voided=voided_count,
        good=good,
        statuses=[(s, statuses.get(s, 0)) for s in STATUSES],
        tickets=sum(statuses.values()),
        overdue=overdue,
    )
