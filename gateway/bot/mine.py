"""/my: the citizen's recent evaluations and how the work orders opened from them stand.

The department's reply (Ticket.reply_text) is shown with its ticket: the evaluator can always read the
answer to their bad review, which closes the loop of Art. 15(二) on the channel they used.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from conversations import texts as dialogue_texts
from gateway.bot import texts
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.store.models import Evaluation, Invitation, Ticket

RECENT = 5  # evaluations listed, newest first
REPLY_CHARS = 500  # a long department reply is cut; the whole one went to the citizen when it was given
# A deadline is due at 24:00 of its last working day, i.e. 00:00 of the next day: show the last day.
_MIDNIGHT_SLACK = timedelta(microseconds=1)


async def my_evaluations(session: AsyncSession, *, citizen_id: int, deps: Deps) -> str:
    """The /my answer for one citizen; never anything of another citizen."""
    rows = (
        await session.exec(
            select(Evaluation, Invitation)
            .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
            .where(Evaluation.citizen_id == citizen_id)
            .order_by(col(Evaluation.created_at).desc(), col(Evaluation.id).desc())
            .limit(RECENT)
        )
    ).all()
    if not rows:
        return texts.MY_EMPTY
    tickets = {
        t.evaluation_id: t
        for t in (
            await session.exec(select(Ticket).where(col(Ticket.evaluation_id).in_([e.id for e, _ in rows])))
        ).all()
    }
    tz = ZoneInfo(deps.settings.timezone)
    now = deps.clock.now()
    lines = [texts.MY_HEADER]
    for number, (evaluation, invitation) in enumerate(rows, 1):
        completed_on = as_utc(invitation.completed_at).astimezone(tz).date()
        service = dialogue_texts.service(invitation.item_name, invitation.office_name, completed_on)
        lines.append(f"{number}. {service}：{dialogue_texts.level_words(evaluation.level)}")
        ticket = tickets.get(evaluation.id)  # type: ignore[arg-type]
        if ticket is None:
            continue
        status = texts.TICKET_STATUS.get(ticket.status, texts.TICKET_STATUS_UNKNOWN)
        if ticket.status in texts.TICKET_OPEN:
            due = as_utc(ticket.due_at)
            due_day = dialogue_texts.day((due.astimezone(tz) - _MIDNIGHT_SLACK).date())
            status += f"，应于{due_day}前办结" if due > now else f"，已超过办理时限（{due_day}）"
        lines.append(f"   {texts.MY_TICKET}：{status}")
        if ticket.reply_text.strip():
            reply = ticket.reply_text.strip()
            if len(reply) > REPLY_CHARS:
                reply = reply[: REPLY_CHARS - 1] + "…"
            lines.append(f"   {texts.MY_REPLY}：{reply}")
    return "\n".join(lines)


__all__ = ["RECENT", "my_evaluations"]
