"""An evaluation as it stands now: the original record, its addenda in order, and the effective values."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.evaluations.schemas import AddendumOut, EvaluationCurrent
from gateway.privacy import redact
from gateway.store.models import Evaluation, EvaluationAddendum


async def addenda_of(session: AsyncSession, evaluation_ids: Iterable[int]) -> dict[int, list[EvaluationAddendum]]:
    """The addenda of each evaluation, oldest first (an evaluation without any maps to an empty list)."""
    ids = sorted(set(evaluation_ids))
    found: dict[int, list[EvaluationAddendum]] = {i: [] for i in ids}
    if not ids:
        return found
    rows = await session.exec(
        select(EvaluationAddendum)
        .where(col(EvaluationAddendum.evaluation_id).in_(ids))
        .order_by(col(EvaluationAddendum.created_at), col(EvaluationAddendum.id))
    )
    for addendum in rows.all():
        found[addendum.evaluation_id].append(addendum)
    return found


def addenda_out(addenda: list[EvaluationAddendum]) -> list[AddendumOut]:
    """The addenda as shown to departments (phone-like numbers in texts masked)."""
    return [
        AddendumOut(
            id=a.id,
            kind=a.kind,
            reasons=list(a.reason_codes),
            text=redact(a.content),
            staff_level=a.staff_level,
            channel=a.channel,
            created_at=as_utc(a.created_at),
        )
        for a in addenda
    ]


def current_of(evaluation: Evaluation, addenda: list[EvaluationAddendum]) -> EvaluationCurrent:
    """The effective reasons, text and staff rating: nothing recorded is replaced, later content is added."""
    reasons = list(evaluation.reason_codes)
    texts = [evaluation.content.strip()] if evaluation.content.strip() else []
    staff_level = evaluation.staff_level
    updated_at = as_utc(evaluation.created_at)
    for addendum in addenda:
        reasons.extend(code for code in addendum.reason_codes if code not in reasons)
        if addendum.content.strip():
            texts.append(addendum.content.strip())
        if addendum.kind == "staff" and addendum.staff_level is not None:
            # A later staff rating is the citizen's latest word on the staff member (Art. 7).
            staff_level = addendum.staff_level
        updated_at = max(updated_at, as_utc(addendum.created_at))
    return EvaluationCurrent(
        reasons=reasons, text=redact("\n".join(texts)), staff_level=staff_level, updated_at=updated_at
    )
