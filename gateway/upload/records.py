"""Queueing upload records: each change that matters upstream becomes one, in the change's transaction.

Called from `gateway.evaluations.records.record_written` (an evaluation, an addendum, a ruling) and from
the ticket actions (resolve, close, callback result). Each call writes the next version of the
evaluation's upload record, holding the evaluation's whole state as it now stands, so the province
receives complete records and a later version replaces an earlier one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.store.models import (
    Evaluation,
    EvaluationAddendum,
    EvaluationDecision,
    Invitation,
    Organisation,
    ServiceCase,
    Ticket,
    TicketEvent,
)
from gateway.upload.models import UploadRecord

# The ticket actions whose result the province receives (整改情况 and the callback's outcome).
TICKET_CHANGES = {"resolve": "rectification", "callback_result": "callback", "close": "close"}


async def queue_upload(session: AsyncSession, *, evaluation_id: int, change: str, at: datetime) -> UploadRecord:
    """Write the next version of the evaluation's upload record; call inside the change's transaction."""
    first = change == "evaluation"
    if first:
        # Written right after the evaluation itself, in its transaction: nobody else sees it yet, and
        # nothing (addenda, rulings, a ticket) hangs off it yet.
        evaluation = await session.get(Evaluation, evaluation_id)
        if evaluation is None:
            raise LookupError(f"evaluation {evaluation_id} is not flushed")
        version = 1
    else:
        # Versions of one evaluation are numbered one after another: on PostgreSQL the evaluation's row
        # lock serialises two changes to the same evaluation (SQLite's writers are serialised already).
        locked = select(Evaluation).where(col(Evaluation.id) == evaluation_id).with_for_update()
        evaluation = (await session.exec(locked)).one()
        last = (
            await session.exec(
                select(func.max(UploadRecord.version)).where(UploadRecord.evaluation_id == evaluation_id)
            )
        ).one()
        version = (last or 0) + 1
    payload = await snapshot(session, evaluation, version=version, change=change, at=at, fresh=first)
    record = UploadRecord(
        evaluation_id=evaluation_id,
        version=version,
        record_key=payload["record_id"],
        change=change,
        level=evaluation.level,
        channel=evaluation.channel,
        evaluated_at=as_utc(evaluation.created_at),
        payload=payload,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(record)
    await session.flush()
    return record


async def snapshot(
    session: AsyncSession,
    evaluation: Evaluation,
    *,
    version: int,
    change: str,
    at: datetime,
    fresh: bool = False,
) -> dict[str, Any]:
    """The evaluation as the province should now see it, in the gateway's own terms (JSON-ready).
    `fresh`: the evaluation was written in this transaction and has nothing added to it yet."""
    invitation = await session.get(Invitation, evaluation.invitation_id)
    if invitation is None:  # a foreign key: cannot happen short of a broken database
        raise LookupError(f"evaluation {evaluation.id} has no invitation {evaluation.invitation_id}")
    case = await session.get(ServiceCase, evaluation.case_id) if evaluation.case_id is not None else None
    if case is None:
        case = (
            await session.exec(
                select(ServiceCase).where(ServiceCase.invitation_id == invitation.id).order_by(col(ServiceCase.id))
            )
        ).first()
    org = await session.get(Organisation, case.org_id if case is not None else invitation.org_id)
    addenda: list[EvaluationAddendum] = []
    decision, ticket = None, None
    if not fresh:
        addenda = list(
            (
                await session.exec(
                    select(EvaluationAddendum)
                    .where(EvaluationAddendum.evaluation_id == evaluation.id)
                    .order_by(col(EvaluationAddendum.id))
                )
            ).all()
        )
        decision = (
            await session.exec(
                select(EvaluationDecision)
                .where(EvaluationDecision.evaluation_id == evaluation.id)
                .order_by(col(EvaluationDecision.id).desc())
            )
        ).first()
        ticket = (await session.exec(select(Ticket).where(Ticket.evaluation_id == evaluation.id))).first()

    reasons = list(evaluation.reason_codes)
    texts = [evaluation.content] if evaluation.content else []
    staff_level = evaluation.staff_level
    for addendum in addenda:
        reasons += [code for code in addendum.reason_codes if code not in reasons]
        if addendum.content:
            texts.append(addendum.content)
        if addendum.staff_level is not None:
            staff_level = addendum.staff_level
    return {
        "record_id": f"{evaluation.id}:{version}",
        "evaluation_id": evaluation.id,
        "version": version,
        "change": change,
        # A batch's one rating carries the batch number, a theme's the theme number (Art. 11).
        "case_no": case.case_no
        if case is not None and (invitation.kind == "single" or evaluation.case_id)
        else invitation.group_no,
        "item_code": case.item_code if case is not None else "",
        "item_name": case.item_name if case is not None else invitation.item_name,
        "org_code": org.code if org is not None else "",
        "region_code": invitation.region_code,
        "channel": evaluation.channel,
        "level": evaluation.level,
        "staff_id": evaluation.staff_id,
        "staff_level": staff_level,
        "reason_codes": reasons,
        "content": "；".join(texts),
        "evaluated_at": as_utc(evaluation.created_at).isoformat(),
        "changed_at": as_utc(at).isoformat(),
        # Cases carry no evaluator type yet: every evaluator is a person (个人) until they do.
        "evaluator_type": "person",
        "valid": decision is None,
        "decision": decision.decision if decision is not None else None,
        "rectification": await _rectification(session, ticket) if ticket is not None else None,
        "callback_result": await _callback(session, ticket) if ticket is not None else None,
    }


async def _rectification(session: AsyncSession, ticket: Ticket) -> str | None:
    """The latest rectification the unit recorded (resolve), or None before it has."""
    event = (
        await session.exec(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket.id, TicketEvent.action == "resolve")
            .order_by(col(TicketEvent.id).desc())
        )
    ).first()
    if event is None:
        return None
    return str(event.data.get("rectification") or "") or None


async def _callback(session: AsyncSession, ticket: Ticket) -> str | None:
    event = (
        await session.exec(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket.id, TicketEvent.action == "callback_result")
            .order_by(col(TicketEvent.id).desc())
        )
    ).first()
    outcome = event.data.get("outcome") if event is not None else None
    return outcome if isinstance(outcome, str) else None
