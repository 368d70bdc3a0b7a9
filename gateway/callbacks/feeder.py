"""The campaign feeder: moves a campaign's targets into the outbox a chunk at a time, and follows them.

Why chunks: a campaign may have 100,000 targets. Queued all at once they would sit in front of the
dispatcher for hours; a pause or a cancel would have to take back 100,000 rows; quiet hours would hold
them all overnight. Instead each running campaign keeps at most `queue_ahead` survey messages waiting
(`queued`) in the outbox. The dispatcher's order (priority, id) puts every answer to a citizen
(priority 0) ahead of them; what an answer can still wait for is the batch being sent, which holds at
most `queue_ahead` (or the batch size) of the campaign's surveys (priority 10).

Each pass, per running campaign, in one transaction that holds the campaign's row:
  1. mirror the outbox state of queued targets onto the targets (sent, delivered, failed, skipped);
  2. outside quiet hours, queue up to `queue_ahead - waiting` pending targets: each target's status
     moves in the same transaction as its outbox insert, and the outbox dedupe key
     `survey:<campaign>:<ticket>` is unique, so a feeder that dies at any point sends nothing twice.
Every `sweep_seconds` (a minute), since these read every question still out: record "no answer" on
questions sent more than GATEWAY_SURVEY_NO_ANSWER_DAYS days ago, mirror late delivery receipts, and
finish the running campaigns with nothing left to send or to answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.callbacks.answers import ASKED_STATUSES, campaign_actor, same_round
from gateway.callbacks.messages import survey_message
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.messaging.outbox import PRIORITY_BULK, reachable_channel
from gateway.passes import run_passes
from gateway.store.db import Store
from gateway.store.models import Campaign, CampaignTarget, Citizen, Invitation, OutboundMessage, Ticket
from gateway.tickets.actions import record_callback_result
from gateway.tickets.errors import TicketError
from gateway.tickets.workflow import RESOLVED

log = logging.getLogger(__name__)

# Outbox statuses that say the survey message is still on its way or has arrived.
_LIVE_MESSAGE = ("queued", "sending", "sent", "delivered")
_EXPIRE_BATCH = 200


@dataclass
class FeedReport:
    """What one pass did (for logs, tests and the CLI)."""

    started: int = 0
    queued: int = 0
    skipped: int = 0
    finished: int = 0
    expired: int = 0


def dedupe_key(campaign_id: int, ticket_id: int) -> str:
    return f"survey:{campaign_id}:{ticket_id}"


async def sync_targets(session: AsyncSession, campaign_id: int, statuses: tuple[str, ...]) -> None:
    """Mirror the outbox state of the campaign's survey messages onto targets in these statuses."""
    message = OutboundMessage
    mapped = case(
        (col(message.status).in_(("failed", "undelivered")), "failed"),
        (col(message.status).in_(("suppressed", "cancelled")), "skipped"),
        (col(message.status) == "delivered", "delivered"),
        (col(message.status) == "sent", "sent"),
        else_=CampaignTarget.status,
    )
    await session.exec(
        update(CampaignTarget)
        .where(
            col(CampaignTarget.message_id) == message.id,
            col(CampaignTarget.campaign_id) == campaign_id,
            col(CampaignTarget.status).in_(statuses),
            col(message.status).in_(("sent", "delivered", "failed", "undelivered", "suppressed", "cancelled")),
            ~and_(col(CampaignTarget.status) == "sent", col(message.status) == "sent"),
        )
        .values(status=mapped)
        .execution_options(synchronize_session=False)
    )


class CampaignFeeder:
    """Feeds running campaigns into the outbox; `run_once` is one pass, `run_forever` the app's loop."""

    def __init__(
        self,
        *,
        store: Store,
        deps: Deps,
        queue_ahead: int,
        on_queued: Callable[[], None] | None = None,
        sweep_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.deps = deps
        self.queue_ahead = queue_ahead
        self.on_queued = on_queued
        self.sweep_seconds = sweep_seconds
        self._last_sweep = float("-inf")

    async def run_once(self) -> FeedReport:
        report = FeedReport()
        now = self.deps.clock.now()
        async with self.store.transaction() as session:
            started = await session.exec(
                update(Campaign)
                .where(col(Campaign.status) == "scheduled", col(Campaign.starts_at) <= now)
                .values(status="running")
            )
            report.started = int(started.rowcount or 0)
            running = list(
                (
                    await session.exec(
                        select(Campaign.id).where(Campaign.status == "running").order_by(col(Campaign.id))
                    )
                ).all()
            )
        for campaign_id in running:
            if campaign_id is None:
                raise BrokenInvariant("campaign_id is missing")
            await self._feed(campaign_id, now, report)
        # The sweep reads every question still out (up to a whole campaign): it runs on its own, slower
        # cadence. No-answer is counted in days, so a minute's delay is nothing.
        if time.monotonic() - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = time.monotonic()
            for campaign_id in await self._asking():
                report.expired += await self._expire(campaign_id, now)
                async with self.store.transaction() as session:
                    await sync_targets(session, campaign_id, ("queued", "sent"))
            for campaign_id in running:
                if campaign_id is None:
                    raise BrokenInvariant("campaign_id is missing")
                report.finished += await self._finish_if_done(campaign_id, now)
        if report.queued and self.on_queued is not None:
            self.on_queued()
        if report.queued or report.started or report.finished or report.expired:
            log.info("campaign feeder pass", extra=vars(report))
        return report

    async def run_forever(self, interval_seconds: float) -> None:
        """The loop owned by the app (STYLE 12): a failed pass is logged and the next one runs."""

        async def one_pass() -> None:
            await self.run_once()

        await run_passes(one_pass, interval_seconds=interval_seconds, what="campaign feeder")

    # --- one campaign ------------------------------------------------------------------------------

    async def _feed(self, campaign_id: int, now: datetime, report: FeedReport) -> None:
        async with self.store.transaction() as session:
            campaign = await self._locked(session, campaign_id)
            if campaign is None or campaign.status != "running":
                return
            await sync_targets(session, campaign_id, ("queued",))
            if not self.deps.quiet.is_quiet(now):  # surveys wait for morning (quiet hours) on every channel
                queued, skipped = await self._queue(session, campaign, now)
                report.queued += queued
                report.skipped += skipped

    async def _finish_if_done(self, campaign_id: int, now: datetime) -> int:
        """Finish a running campaign when nothing is left to send or to answer; 1 if it did."""
        async with self.store.transaction() as session:
            campaign = await self._locked(session, campaign_id)
            if campaign is None or campaign.status != "running" or await self._has_work(session, campaign_id):
                return 0
            await sync_targets(session, campaign_id, ("queued", "sent"))
            campaign.status, campaign.finished_at = "finished", now
        log.info("campaign finished", extra={"campaign_id": campaign_id})
        return 1

    async def _locked(self, session: AsyncSession, campaign_id: int) -> Campaign | None:
        query = select(Campaign).where(Campaign.id == campaign_id).execution_options(populate_existing=True)
        if self.store.dialect == "postgresql":
            # One feeder per campaign at a time; pause and cancel wait for the chunk to commit.
            query = query.with_for_update(skip_locked=True)
        return (await session.exec(query)).first()

    async def _queue(self, session: AsyncSession, campaign: Campaign, now: datetime) -> tuple[int, int]:
        """Queue the next chunk of pending targets; returns (queued, skipped)."""
        if campaign.id is None:
            raise BrokenInvariant("campaign.id is missing")
        # Only rows still waiting count: a batch a dispatcher is sending is bounded by its batch size, and
        # rows leased by a dispatcher that died must not stall the campaign until their lease runs out.
        waiting = (
            await session.exec(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.campaign_id == campaign.id, OutboundMessage.status == "queued")
            )
        ).one()
        room = self.queue_ahead - waiting
        if room <= 0:
            return 0, 0
        query = (
            select(CampaignTarget, Ticket, Invitation.item_name, Citizen)
            .join(Ticket, col(Ticket.id) == CampaignTarget.ticket_id)
            .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
            .outerjoin(Citizen, col(Citizen.id) == CampaignTarget.citizen_id)
            .where(CampaignTarget.campaign_id == campaign.id, CampaignTarget.status == "pending")
            .order_by(col(CampaignTarget.id))
            .limit(room)
        )
        if self.store.dialect == "postgresql":
            # A phone answer for one of these targets commits first or waits: never both.
            query = query.with_for_update(of=CampaignTarget)
        rows = (await session.exec(query)).all()
        if not rows:
            return 0, 0
        # Messages these targets already have: taken back by a pause, or (after a crash between
        # steps that cannot happen in one transaction, but costs one query to rule out) orphaned.
        keys = {dedupe_key(campaign.id, t.ticket_id): t for t, _, _, _ in rows}
        linked = [t.message_id for t, _, _, _ in rows if t.message_id is not None]
        existing = (
            await session.exec(
                select(OutboundMessage).where(
                    or_(col(OutboundMessage.id).in_(linked), col(OutboundMessage.dedupe_key).in_(list(keys)))
                )
            )
        ).all()
        by_key = {m.dedupe_key: m for m in existing}
        settings = self.deps.settings
        hold = self.deps.quiet.hold_until("survey", now)
        queued = skipped = 0
        fresh: list[tuple[CampaignTarget, OutboundMessage]] = []
        for target, ticket, item_name, citizen in rows:
            channel = reachable_channel(citizen, bot_enabled=settings.bot_enabled) if citizen is not None else None
            if (
                citizen is None
                or citizen.id is None
                or channel is None
                or ticket.status != RESOLVED
                or not same_round(ticket, target)
            ):
                # The ticket got its result another way, or the citizen cannot be reached (opted out
                # everywhere, no channel): phone staff may still call and enter the answer.
                target.status = "skipped"
                skipped += 1
                continue
            body, buttons = survey_message(
                channel=channel,
                signature=settings.sms_signature,
                ticket_id=ticket.id,  # type: ignore[arg-type]
                item_name=item_name,
                at=now,
            )
            key = dedupe_key(campaign.id, target.ticket_id)
            message = by_key.get(key)
            if message is None:
                message = OutboundMessage(
                    channel=channel,
                    citizen_id=citizen.id,
                    purpose="survey",
                    priority=PRIORITY_BULK,
                    body=body,
                    buttons=buttons,
                    not_before=hold,
                    next_attempt_at=hold or now,
                    dedupe_key=key,
                    ticket_id=ticket.id,
                    campaign_id=campaign.id,
                    created_at=now,
                    updated_at=now,
                )
                session.add(message)
                fresh.append((target, message))
            elif message.status == "cancelled":
                # Resumed after a pause: the same row goes out, on the citizen's channel of today.
                message.channel, message.body, message.buttons = channel, body, buttons
                message.status, message.not_before, message.next_attempt_at = "queued", hold, hold or now
                message.lease_until, message.updated_at = None, now
                target.message_id = message.id
            else:
                target.message_id = message.id
            target.status, target.channel = "queued", channel
            queued += 1
        await session.flush()
        for target, message in fresh:
            target.message_id = message.id
        await session.flush()
        return queued, skipped

    async def _has_work(self, session: AsyncSession, campaign_id: int) -> bool:
        """Anything left to send, or a question out that may still be answered."""
        remaining = (
            select(CampaignTarget.id)
            .outerjoin(OutboundMessage, col(OutboundMessage.id) == CampaignTarget.message_id)
            .where(
                CampaignTarget.campaign_id == campaign_id,
                or_(
                    col(CampaignTarget.status) == "pending",
                    and_(
                        col(CampaignTarget.status).in_(ASKED_STATUSES),
                        or_(col(OutboundMessage.id).is_(None), col(OutboundMessage.status).in_(_LIVE_MESSAGE)),
                    ),
                ),
            )
            .limit(1)
        )
        return (await session.exec(remaining)).first() is not None

    # --- questions out --------------------------------------------------------------------------------

    async def _asking(self) -> list[int]:
        """Campaigns with questions out (running, paused, or cancelled after they were sent)."""
        asked = exists().where(
            col(CampaignTarget.campaign_id) == Campaign.id, col(CampaignTarget.status).in_(ASKED_STATUSES)
        )
        async with self.store.transaction() as session:
            ids = (
                await session.exec(
                    select(Campaign.id).where(col(Campaign.status).in_(("running", "paused", "cancelled")), asked)
                )
            ).all()
        return [i for i in ids if i is not None]

    async def _expire(self, campaign_id: int, now: datetime) -> int:
        """Record "no answer" for questions sent more than the configured days ago (Art. 15(五))."""
        cutoff = now - timedelta(days=self.deps.settings.survey_no_answer_days)
        expired = 0
        while True:
            async with self.store.transaction() as session:
                query = (
                    select(CampaignTarget)
                    .join(OutboundMessage, col(OutboundMessage.id) == CampaignTarget.message_id)
                    .where(
                        CampaignTarget.campaign_id == campaign_id,
                        col(CampaignTarget.status).in_(ASKED_STATUSES),
                        col(OutboundMessage.status).in_(("sent", "delivered")),
                        col(OutboundMessage.sent_at) <= cutoff,
                    )
                    .order_by(col(CampaignTarget.id))
                    .limit(_EXPIRE_BATCH)
                    .execution_options(populate_existing=True)
                )
                if self.store.dialect == "postgresql":
                    query = query.with_for_update(of=CampaignTarget, skip_locked=True)
                targets = (await session.exec(query)).all()
                if not targets:
                    return expired
                campaign = await session.get(Campaign, campaign_id)
                if campaign is None:
                    raise BrokenInvariant("campaign is missing")
                for target in targets:
                    ticket = await session.get(Ticket, target.ticket_id)
                    if ticket is None or not same_round(ticket, target) or ticket.status != "resolved":
                        # The ticket moved on without this question (a result entered on the ticket
                        # itself, a redo): this round's silence says nothing about it any more.
                        target.status = "skipped"
                        continue
                    try:
                        await record_callback_result(
                            session,
                            ticket_id=target.ticket_id,
                            outcome="no_answer",
                            deps=self.deps,
                            actor=campaign_actor(campaign),
                            channel=target.channel,  # type: ignore[arg-type]
                            campaign_id=campaign_id,
                        )
                    except TicketError as exc:  # the department recorded a result on the ticket itself
                        log.info(
                            "no-answer not recorded on the ticket",
                            extra={"ticket_id": target.ticket_id, "reason": exc.message},
                        )
                    target.status = "no_answer"
                    expired += 1
            if len(targets) < _EXPIRE_BATCH:
                return expired


__all__ = ["CampaignFeeder", "FeedReport", "dedupe_key", "sync_targets"]
