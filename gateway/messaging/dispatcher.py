"""The dispatcher: claims queued messages, sends them through the providers, records every attempt.

Delivery is at least once. A claim is a lease: a process that dies between claim and send leaves the
row in `sending` until the lease runs out, and then any dispatcher claims it again. On PostgreSQL the
claim uses FOR UPDATE SKIP LOCKED, so several dispatchers never take the same row at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.errors import BrokenInvariant
from gateway.messaging.outbox import OPT_OUT_CONFIRMATION, record_opt_out
from gateway.messaging.providers import Outgoing, Provider, SendFailed, Sent
from gateway.messaging.quiet import QuietHours
from gateway.messaging.ratelimit import RateLimiter
from gateway.messaging.segments import fit
from gateway.passes import run_passes
from gateway.privacy import PhoneVault
from gateway.store.db import Store
from gateway.store.models import Citizen, DeliveryAttempt, OutboundMessage
from gateway.store.sets import in_set

log = logging.getLogger(__name__)

WEBHOOK = "webhook"  # messages to a department's system (overdue reminders), not to a citizen


@dataclass(frozen=True)
class DispatchPolicy:
    batch_size: int = 50
    max_attempts: int = 8
    lease_seconds: int = 120
    base_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 900.0
    concurrency: int = 16
    status_callback_url: str | None = None
    sms_rate_per_second: float = 10.0
    sms_signature: str = ""
    telegram_rate_per_second: float = 30.0


@dataclass
class _Recipient:
    """The citizen's columns a send needs."""

    id: int
    phone_enc: str | None
    sms_opted_out_at: datetime | None
    telegram_chat_id: int | None
    bot_blocked_at: datetime | None


_RECIPIENT_COLUMNS = (
    col(Citizen.id),
    col(Citizen.phone_enc),
    col(Citizen.sms_opted_out_at),
    col(Citizen.telegram_chat_id),
    col(Citizen.bot_blocked_at),
)


@dataclass
class _Claimed:
    """A leased message as the claim read it."""

    id: int
    channel: str
    citizen_id: int | None
    purpose: str
    body: str
    buttons: list[Any] | None
    reply_to_chat_message_id: int | None
    recipient: _Recipient | None = None


_CLAIMED_COLUMNS = (
    col(OutboundMessage.id),
    col(OutboundMessage.channel),
    col(OutboundMessage.citizen_id),
    col(OutboundMessage.purpose),
    col(OutboundMessage.body),
    col(OutboundMessage.buttons),
    col(OutboundMessage.reply_to_chat_message_id),
)

# The provider took the message: as `_finish(..., result.status, outcome="sent")` does for one.
_RECORD_SENT = (
    update(OutboundMessage)
    .where(col(OutboundMessage.id) == bindparam("m_id"))
    .values(status=bindparam("m_status"), provider_message_id=bindparam("m_provider_id"), lease_until=None)
)


_RECORD_SENT_PG = text(
    "WITH moved AS ("
    " UPDATE outbound_message AS m SET status = v.status, provider_message_id = v.provider_id,"
    " lease_until = NULL, sent_at = :now, updated_at = :now"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:statuses AS text[]), CAST(:provider_ids AS text[]))"
    " AS v(id, status, provider_id)"
    " WHERE m.id = v.id AND m.status = 'sending' RETURNING m.id)"
    " INSERT INTO delivery_attempt (message_id, at, outcome, error_code, detail)"
    " SELECT id, :now, 'sent', NULL, '' FROM moved RETURNING message_id"
)


_RECIPIENTS = select(*_RECIPIENT_COLUMNS).where(in_set(col(Citizen.id), "cs"))  # type: ignore[call-overload]


def _in_order(claimed: list[_Claimed], ids: list[int]) -> list[_Claimed]:
    position = {message_id: n for n, message_id in enumerate(ids)}
    return sorted(claimed, key=lambda m: position[m.id])


# How far sends may run ahead of an even pace: at most this fraction of a second's worth of the rate.
PACING_SLACK_SECONDS = 0.005


class _Tokens:
    """Send permissions of one rate-limit key for one batch, taken from the limiter many at a time.

    A limiter with `take` (both of ours) grants up to the batch's remaining need in one call (one Redis
    round trip per key and second instead of one per message); any other is asked once per message.
    The permissions granted together are then spent evenly, one every 1/rate seconds: a second's worth
    of sends never leaves in a burst that would run into the next second's at the provider. The pace
    (`pace[key]`, the time the next send is due) carries over from one batch to the next, so a batch
    that starts right after another (its claim made ahead, the other's record under way) goes on at
    the same pace instead of starting with a burst.
    """

    def __init__(self, limiter: RateLimiter, key: str, needed: int, pace: dict[str, float]) -> None:
        self.limiter, self.key, self.needed, self.pace = limiter, key, needed, pace
        self.held = 0
        self.lock = asyncio.Lock()

    async def take(self, rate: float) -> None:
        take_many = getattr(self.limiter, "take", None)
        if take_many is None:
            await self.limiter.acquire(self.key, rate)
            return
        async with self.lock:
            if self.held == 0:
                self.held = await take_many(self.key, max(1, self.needed), rate)
                self.needed -= self.held
            self.held -= 1
            now = time.monotonic()
            # Up to PACING_SLACK_SECONDS ahead of the even pace, so as not to sleep per message; and a
            # wake-up that came late makes up for up to as much, instead of losing the time for good.
            next_at = self.pace.get(self.key, 0.0)
            wait = next_at - now - PACING_SLACK_SECONDS
            self.pace[self.key] = max(now - PACING_SLACK_SECONDS, next_at) + 1.0 / rate
            if wait > 0:
                await asyncio.sleep(wait)


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        providers: Mapping[str, Provider],
        vault: PhoneVault,
        clock: Clock,
        quiet: QuietHours,
        limiter: RateLimiter,
        policy: DispatchPolicy,
    ) -> None:
        self.store = store
        self.providers = providers
        self.vault = vault
        self.clock = clock
        self.quiet = quiet
        self.limiter = limiter
        self.policy = policy
        self._wake = asyncio.Event()
        # The loop's next batch, claimed while the current one is sent (`run_once(overlap=True)`).
        self._next: asyncio.Task[list[_Claimed]] | None = None
        self._recording: asyncio.Task[None] | None = None  # a sent batch's record, while the next batch sends
        self._pace: dict[str, float] = {}  # by rate-limit key: when the next send is due (`_Tokens`)

    def wake(self) -> None:
        """Ask the loop to look at the outbox now (after a request queued something)."""
        self._wake.set()

    async def claim(self) -> list[int]:
        """Lease a batch of due messages to this dispatcher; returns their ids in sending order."""
        return [message.id for message in await self._claim()]

    async def _claim(self, busy: frozenset[int] = frozenset()) -> list[_Claimed]:
        """Lease a batch of due messages and read what sending them needs: one transaction, three statements.
        Messages of the `busy` citizens (those of the batch being sent) are left for a later batch."""
        now = self.clock.now()
        ready = or_(
            and_(col(OutboundMessage.status) == "queued", col(OutboundMessage.next_attempt_at) <= now),
            and_(col(OutboundMessage.status) == "sending", col(OutboundMessage.lease_until) < now),
        )
        if busy:
            ready = and_(
                ready, or_(col(OutboundMessage.citizen_id).is_(None), col(OutboundMessage.citizen_id).not_in(busy))
            )
        query = (
            select(OutboundMessage.id)
            .where(ready)
            .order_by(col(OutboundMessage.priority), col(OutboundMessage.id))
            .limit(self.policy.batch_size)
        )
        async with self.store.transaction() as session:
            if self.store.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = [i for i in (await session.exec(query)).all() if i is not None]
            if not ids:
                return []
            leased = await session.exec(
                update(OutboundMessage)
                .where(in_set(col(OutboundMessage.id), "ids"))
                .values(
                    status="sending",
                    lease_until=now + timedelta(seconds=self.policy.lease_seconds),
                    attempts=OutboundMessage.attempts + 1,
                    updated_at=now,
                )
                .returning(*_CLAIMED_COLUMNS),
                params={"ids": ids},
            )
            claimed = [_Claimed(*row) for row in leased.all()]
            citizen_ids = {m.citizen_id for m in claimed if m.citizen_id is not None}
            citizens: dict[int, _Recipient] = {}
            if citizen_ids:
                rows = await session.exec(_RECIPIENTS, params={"cs": sorted(citizen_ids)})
                citizens = {row[0]: _Recipient(*row) for row in rows.all()}
        for message in claimed:
            message.recipient = citizens.get(message.citizen_id) if message.citizen_id is not None else None
        return _in_order(claimed, ids)

    async def run_once(self, *, overlap: bool = False) -> int:
        """Claim and send one batch; returns how many messages were handled.

        Different citizens are served concurrently; one citizen's messages go one after another, in
        the order they were queued, so a question never overtakes the answer it follows. The common
        case (a message that may go now to a reachable citizen) is sent from what the claim read and
        its success recorded with the batch's others in one transaction; anything else (quiet hours,
        an opt-out, a failure) takes the message's own transaction as before.

        With `overlap` (the background loop), a full batch means more is waiting: the next batch is
        claimed while this one is sent, without this batch's citizens (their next message waits until
        this one is recorded), and the next pass starts from it, so sending does not pause for the claim.
        """
        ahead, self._next = self._next, None
        claimed = await ahead if ahead is not None else []
        if not claimed:  # nothing claimed ahead (all that waited was the last batch's citizens'): claim now
            claimed = await self._claim()
        if not claimed:
            await self._recorded()  # a pass that finds nothing leaves nothing unrecorded behind it
            return 0
        if overlap and len(claimed) >= self.policy.batch_size:
            busy = frozenset(m.citizen_id for m in claimed if m.citizen_id is not None)
            self._next = asyncio.create_task(self._claim(busy), name="dispatcher-next-claim")
        by_citizen: dict[int | None, list[_Claimed]] = {}  # None: messages to departments (webhook)
        for message in sorted(claimed, key=lambda m: m.id):
            by_citizen.setdefault(message.citizen_id, []).append(message)
        gate = asyncio.Semaphore(self.policy.concurrency)
        ready: dict[int, tuple[Outgoing, Provider]] = {}
        wanted: Counter[str] = Counter()
        for message in claimed:
            prepared = self._prepared(message)
            if prepared is not None:
                ready[message.id] = prepared
                wanted.update(key for key, _ in self._rates(prepared[0]))
        # A pace long past behaves as no pace: dropped, so that one entry per chat ever sent to does not stay.
        stale = time.monotonic() - PACING_SLACK_SECONDS
        self._pace = {key: due for key, due in self._pace.items() if due > stale}
        tokens = {key: _Tokens(self.limiter, key, count, self._pace) for key, count in wanted.items()}
        sent: list[tuple[int, Sent]] = []

        async def in_order(messages: list[_Claimed]) -> None:
            async with gate:
                for message in messages:
                    try:
                        prepared = ready.get(message.id)
                        if prepared is None:
                            await self._deliver(message.id)
                            continue
                        outgoing, provider = prepared
                        for key, rate in self._rates(outgoing):
                            await tokens[key].take(rate)
                        try:
                            result: Sent | SendFailed = await provider.send(outgoing)
                        except SendFailed as failure:
                            result = failure
                        if isinstance(result, Sent):
                            sent.append((message.id, result))
                        else:  # recorded before this citizen's next message goes (an opt-out changes its way)
                            await self._record(message.id, result)
                    except Exception:  # one bad row must not stop the batch; its lease brings it back
                        log.exception("dispatch failed unexpectedly", extra={"message_id": message.id})

        try:
            await asyncio.gather(*(in_order(messages) for messages in by_citizen.values()))
        finally:
            # The batch before this one was recorded while this one was sent: it is done before anything
            # after this batch is sent (a citizen's next message may be in the next batch but one), and
            # at most one record is in flight.
            await self._recorded()
            if sent and self._next is not None:
                # The next batch is claimed and waiting: it starts sending while this one is recorded, so
                # the rate's time is not spent waiting for the database.
                self._recording = asyncio.create_task(self._record_sent(sent), name="dispatcher-record")
            elif sent:
                await self._record_sent(sent)
        return len(claimed)

    async def _recorded(self) -> None:
        """Wait for the batch record running in the background, if any (its failure is logged: the
        messages stay `sending` and their leases bring them back)."""
        recording, self._recording = self._recording, None
        if recording is not None:
            try:
                await asyncio.shield(recording)
            except asyncio.CancelledError:
                await asyncio.gather(recording, return_exceptions=True)  # finish the record, then stop
                raise
            except Exception:
                log.exception("recording a sent batch failed; its messages come back after their lease")

    def _prepared(self, message: _Claimed) -> tuple[Outgoing, Provider] | None:
        """The message ready to leave as claimed, or None when it needs its own transaction's checks."""
        provider = self.providers.get(message.channel)
        if provider is None or self.quiet.hold_until(message.purpose, self.clock.now()) is not None:
            return None
        citizen = message.recipient
        if message.channel == WEBHOOK and message.citizen_id is None:
            to, callback = "", None
        elif citizen is None:
            return None
        elif message.channel == "sms" and citizen.phone_enc is not None and citizen.sms_opted_out_at is None:
            to, callback = self.vault.decrypt(citizen.phone_enc), self._status_callback(message.id)
        elif message.channel == "telegram" and citizen.telegram_chat_id is not None and citizen.bot_blocked_at is None:
            to, callback = str(citizen.telegram_chat_id), None
        else:
            return None
        return _outgoing(message, to, callback), provider

    def _status_callback(self, message_id: int) -> str | None:
        """Twilio's status callback URL, with our id in it: a callback that beats the send's answer still
        finds its message."""
        return f"{self.policy.status_callback_url}?m={message_id}" if self.policy.status_callback_url else None

    async def _record_sent(self, sent: list[tuple[int, Sent]]) -> None:
        """Record the provider's acceptance of many messages in one transaction.

        A message no longer `sending` had a delivery callback first: it goes `_record`'s way, one by one.
        """
        now = self.clock.now()
        async with self.store.transaction() as session:
            if self.store.dialect == "postgresql":
                live = await self._record_sent_pg(session, sent, now)
            else:
                live = await self._record_sent_rows(session, sent, now)
        for message_id, result in sent:
            if message_id not in live:
                await self._record(message_id, result)

    @staticmethod
    async def _record_sent_pg(session: AsyncSession, sent: list[tuple[int, Sent]], now: datetime) -> set[int]:
        """One statement for the batch: the messages still `sending` move (the UPDATE's row lock waits for
        a delivery callback committing at the same moment, and its condition is then read again) and
        each gets its attempt."""
        result = await session.exec(
            _RECORD_SENT_PG,  # type: ignore[call-overload]
            params={
                "ids": [message_id for message_id, _ in sent],
                "statuses": [r.status for _, r in sent],
                "provider_ids": [r.provider_message_id for _, r in sent],
                "now": now,
            },
        )
        return {message_id for (message_id,) in result.all()}

    @staticmethod
    async def _record_sent_rows(session: AsyncSession, sent: list[tuple[int, Sent]], now: datetime) -> set[int]:
        """A statement for each step (SQLite): the messages still `sending`, locked, then moved and given
        their attempts."""
        # Locked: a delivery callback for one of them may be committing at the same moment.
        ids = [message_id for message_id, _ in sent]
        query = select(OutboundMessage.id).where(
            col(OutboundMessage.id).in_(ids), col(OutboundMessage.status) == "sending"
        )
        live = {i for i in (await session.exec(query.with_for_update())).all() if i is not None}
        rows = [
            {"m_id": i, "m_status": result.status, "m_provider_id": result.provider_message_id}
            for i, result in sent
            if i in live
        ]
        if rows:
            connection = await session.connection()
            await connection.execute(_RECORD_SENT.values(sent_at=now, updated_at=now), rows)
            await connection.execute(
                insert(DeliveryAttempt),
                [
                    {"message_id": row["m_id"], "at": now, "outcome": "sent", "error_code": None, "detail": ""}
                    for row in rows
                ],
            )
        return live

    async def run_forever(self, interval_seconds: float) -> None:
        """The background loop owned by the app (and by `gateway worker`)."""

        async def one_pass() -> int:
            return await self.run_once(overlap=True)

        try:
            await run_passes(one_pass, interval_seconds=interval_seconds, what="dispatcher", wake=self._wake)
        finally:
            await self._recorded()
            await self._give_back_next()

    async def _give_back_next(self) -> None:
        """On stopping: the batch claimed ahead goes back to the queue at once (not after its lease)."""
        upcoming, self._next = self._next, None
        if upcoming is None:
            return
        try:
            claimed = await upcoming
        except Exception:  # the claim failed: nothing was leased
            return
        if not claimed:
            return
        async with self.store.transaction() as session:
            await session.exec(
                update(OutboundMessage)
                .where(col(OutboundMessage.id).in_([m.id for m in claimed]), col(OutboundMessage.status) == "sending")
                .values(status="queued", lease_until=None, attempts=OutboundMessage.attempts - 1)
            )

    async def _deliver(self, message_id: int) -> None:
        async with self.store.transaction() as session:
            message = await session.get(OutboundMessage, message_id)
            if message is None or message.status != "sending":
                return
            citizen = await session.get(Citizen, message.citizen_id) if message.citizen_id is not None else None
            if citizen is None and message.channel != WEBHOOK:
                _finish(session, message, self.clock.now(), "failed", detail="the message has no recipient")
                return
            now = self.clock.now()
            held = self.quiet.hold_until(message.purpose, now)
            if held is not None:
                # Checked again at send time: a message queued in the day may reach here at night.
                message.status, message.next_attempt_at, message.not_before = "queued", held, held
                message.attempts -= 1
                message.lease_until, message.updated_at = None, now
                return
            blocked = _blocked_reason(message, citizen) if citizen is not None else None
            if blocked is not None and citizen is not None:
                if message.channel == "telegram" and citizen.phone_enc and citizen.sms_opted_out_at is None:
                    if not _to_sms(message, self.policy.sms_signature):
                        _finish(session, message, now, "suppressed", detail="a keyboard edit has no SMS form")
                        return
                else:
                    _finish(session, message, now, "suppressed", detail=blocked)
                    return
            outgoing = self._outgoing(message, citizen)
        provider = self.providers.get(message.channel)
        if provider is None:
            await self._record(message_id, SendFailed(f"no provider for channel {message.channel}", permanent=True))
            return
        for key, rate in self._rates(outgoing):
            await self.limiter.acquire(key, rate)
        try:
            result: Sent | SendFailed = await provider.send(outgoing)
        except SendFailed as failure:
            result = failure
        await self._record(message_id, result)

    def _rates(self, outgoing: Outgoing) -> list[tuple[str, float]]:
        """The send-rate buckets a message passes: per sender, and per chat for the bot."""
        if outgoing.channel == WEBHOOK:
            return []  # one department endpoint, a few calls a day
        if outgoing.channel == "telegram":
            # Telegram's limits: about 30 messages a second per bot, one a second per chat.
            return [("telegram", self.policy.telegram_rate_per_second), (f"telegram:{outgoing.to}", 1.0)]
        return [(outgoing.channel, self.policy.sms_rate_per_second)]

    def _outgoing(self, message: OutboundMessage, citizen: Citizen | None) -> Outgoing:
        if message.id is None:
            raise BrokenInvariant("message.id is missing")
        if citizen is None:  # a webhook message: the provider knows the URL
            to, callback = "", None
        elif message.channel == "sms":
            if citizen.phone_enc is None:
                raise BrokenInvariant("citizen.phone_enc is missing")
            to, callback = self.vault.decrypt(citizen.phone_enc), self._status_callback(message.id)
        else:
            to, callback = str(citizen.telegram_chat_id), None
        return _outgoing(message, to, callback)

    async def _record(self, message_id: int, result: Sent | SendFailed) -> None:
        now = self.clock.now()
        async with self.store.transaction() as session:
            # Locked: a delivery callback for this message may be committing at the same moment.
            message = await session.get(OutboundMessage, message_id, with_for_update=True)
            if message is None:
                return
            if message.status != "sending":
                # A delivery callback named this message before the send's own answer came back (it
                # carries our id): the provider has it, and what the callback said stands, even when our
                # side of the send timed out or failed. No retry, no status moved back.
                if isinstance(result, Sent):
                    message.provider_message_id = message.provider_message_id or result.provider_message_id
                    message.sent_at = message.sent_at or now
                message.lease_until = None
                session.add(
                    DeliveryAttempt(
                        message_id=message_id,
                        at=now,
                        outcome="sent" if isinstance(result, Sent) else "failed",
                        error_code=None if isinstance(result, Sent) else result.code,
                        detail=f"the send's answer came after a delivery callback ({message.status})",
                    )
                )
                return
            if isinstance(result, Sent):
                message.provider_message_id = result.provider_message_id
                message.sent_at = now
                _finish(session, message, now, result.status, outcome="sent")
                return
            citizen = await session.get(Citizen, message.citizen_id) if message.citizen_id is not None else None
            if result.opt_out and citizen is not None:
                if message.channel == "sms":
                    record_opt_out(citizen, channel="sms", at=now)
                elif message.channel == "telegram" and record_opt_out(citizen, channel="telegram", at=now):
                    if citizen.phone_enc and citizen.sms_opted_out_at is None:
                        # Send the same words by SMS instead of losing them.
                        if _to_sms(message, self.policy.sms_signature):
                            _retry(session, message, now, result, delay=0.0)
                        else:
                            _finish(
                                session,
                                message,
                                now,
                                "suppressed",
                                outcome="failed",
                                code=result.code,
                                detail="the bot is blocked; a keyboard edit has no SMS form",
                            )
                        return
            if result.permanent or message.attempts >= self.policy.max_attempts:
                _finish(session, message, now, "failed", outcome="failed", code=result.code, detail=result.detail)
                log.warning(
                    "message failed for good",
                    extra={"message_id": message_id, "error_code": result.code, "attempts": message.attempts},
                )
                return
            delay = result.retry_after_seconds
            if delay is None:
                policy = self.policy
                delay = backoff_seconds(message.attempts, policy.base_backoff_seconds, policy.max_backoff_seconds)
            _retry(session, message, now, result, delay=delay)


def backoff_seconds(attempts: int, base_seconds: float, max_seconds: float) -> float:
    """The wait before the next try after `attempts` tries: doubling, capped, with a fifth of jitter so
    that rows failed together do not all come back at the same moment (the upload feed uses it too)."""
    return min(max_seconds, base_seconds * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)


def _to_sms(message: OutboundMessage, signature: str) -> bool:
    """Turn a bot message into its SMS form (signed, buttons as text); False for a keyboard edit."""
    if message.reply_to_chat_message_id is not None:
        return False
    labels = [
        str(button.get("text", "")) for row in message.buttons or [] for button in row if isinstance(button, dict)
    ]
    options = " 回复：" + "；".join(labels) if labels else ""
    # An SMS stays within two segments (DESIGN §2): the words are shortened, never the options.
    message.body = fit(lambda words: signature + words + options, message.body, max_segments=2)
    message.channel, message.buttons = "sms", None
    return True


def _blocked_reason(message: OutboundMessage, citizen: Citizen) -> str | None:
    # Opt-outs are checked when sending, not only when queueing: a STOP may arrive in between.
    if message.channel == "sms" and citizen.sms_opted_out_at is not None:
        return "recipient opted out of SMS"
    if message.channel == "sms" and citizen.phone_enc is None:
        return "recipient has no phone number"
    if message.channel == "telegram" and citizen.telegram_chat_id is None:
        return "recipient has no chat"
    if message.channel == "telegram" and citizen.bot_blocked_at is not None and message.purpose != OPT_OUT_CONFIRMATION:
        # The confirmation of a 退订 goes to the chat that has just opted out; nothing else does. (It never
        # falls back to SMS: the same 退订 opted the number out.)
        return "recipient blocked the bot or opted out in the chat"
    return None


def _finish(
    session: AsyncSession,
    message: OutboundMessage,
    now: datetime,
    status: str,
    *,
    outcome: str | None = None,
    code: str | None = None,
    detail: str = "",
) -> None:
    message.status, message.lease_until, message.updated_at = status, None, now
    if code is not None:
        message.error_code = code
    if detail:
        message.last_error = detail[:2000]
    if message.id is None:
        raise BrokenInvariant("message.id is missing")
    session.add(
        DeliveryAttempt(message_id=message.id, at=now, outcome=outcome or status, error_code=code, detail=detail[:2000])
    )


def _retry(session, message: OutboundMessage, now: datetime, failure: SendFailed, *, delay: float) -> None:  # type: ignore[no-untyped-def]
    message.status, message.lease_until, message.updated_at = "queued", None, now
    message.next_attempt_at = now + timedelta(seconds=delay)
    message.error_code, message.last_error = failure.code, failure.detail[:2000]
    if message.id is None:
        raise BrokenInvariant("message.id is missing")
    session.add(
        DeliveryAttempt(
            message_id=message.id, at=now, outcome="retry", error_code=failure.code, detail=failure.detail[:2000]
        )
    )


def _outgoing(message: _Claimed | OutboundMessage, to: str, callback: str | None) -> Outgoing:
    """What a provider is given for a message: from the claim's columns or from the stored row."""
    if message.id is None:
        raise BrokenInvariant("message.id is missing")
    return Outgoing(
        message_id=message.id,
        channel=message.channel,
        to=to,
        body=message.body,
        buttons=message.buttons,
        status_callback=callback,
        edit_message_id=message.reply_to_chat_message_id,
    )
