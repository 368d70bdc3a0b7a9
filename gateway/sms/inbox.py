"""The SMS inbox: an inbound reply is stored on arrival and processed by a drainer.

Accepting (`InboxWriter`): once the webhook has checked Twilio's signature it hands the message over
and waits until it is durable. The writer inserts the messages of every request waiting at that moment
in one statement (group commit, `ON CONFLICT DO NOTHING` on the MessageSid) and tells each request
whether its message was new. Twilio gets its answer then; nothing has been processed yet.

Processing (`InboxDrainer`): a pass claims, under a lease, the earliest pending message of each sender
(never a later one while an earlier is pending or being processed), so one citizen's messages run one
at a time and in order whichever process drains. Each goes through the conversation; the
conversation's transaction also marks the message processed and clears its text and number, so the
effects and the mark commit together: a crash leaves the message pending, and the next claim after the
lease acts once. A message that fails `max_attempts` times is set aside with its error (a dead letter
for an operator), so it no longer holds back that sender's later messages.

An outage of Redis (conversation state and locks) is not the message's fault: a message that meets
one goes back to pending with its attempt given back, and the drainer pauses until Redis answers
again (`RedisWatch`: one log line when it goes, one when it returns). Webhooks keep being stored
meanwhile, and every message is processed, in order, once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from conversations import Inbound
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.dialogue import GroupInput, Runner, converse, converse_group
from gateway.errors import BrokenInvariant
from gateway.passes import STOP_GRACE_SECONDS, run_passes
from gateway.privacy import mask_phone, redact
from gateway.store.db import Store
from gateway.store.group_commit import GroupCommit
from gateway.store.models import INBOX_DEAD, INBOX_PENDING, Citizen, InboundMessage, inbox_state_is
from gateway.store.redis_watch import is_outage
from gateway.store.sets import in_set
from gateway.store.upsert import insert_rows

log = logging.getLogger(__name__)

PROVIDER = "twilio"
NOTIFY_CHANNEL = "gw_sms_inbox"  # PostgreSQL NOTIFY channel: "new messages are in the inbox"
LISTEN_CHECK_SECONDS = 60.0  # how often the listening connection proves it is still there


class InboxUnavailable(Exception):
    """The message could not be stored: nothing was recorded, the webhook answers 503."""


# Longer than any SMS (Twilio joins at most 1,600 characters); the conversation reads fewer still.
MAX_BODY_CHARS = 8000


def storable_text(raw: str) -> str:
    """The text as the database can hold it: no NUL (PostgreSQL refuses it), no lone surrogates, capped."""
    return raw[:MAX_BODY_CHARS].replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class Arrival:
    """A signed inbound SMS, ready to store: the number only encrypted and as its keyed hash."""

    provider_id: str
    sender_hash: str
    sender_enc: str
    body: str
    received_at: datetime


class InboxWriter:
    """Stores arrivals; concurrent requests share one INSERT and one commit (`gateway.store.group_commit`)."""

    # The process counts as busy taking messages in (see InboxDrainer) while they come at this rate or
    # faster, over windows of this length: a trickle does not slow processing down.
    BUSY_PER_SECOND = 100
    WINDOW_SECONDS = 0.25

    def __init__(self, store: Store, *, max_batch: int = 500, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.monotonic = store, monotonic
        self._commits = GroupCommit(self._write, max_batch=max_batch, refusal=_unavailable, name="sms-inbox-writer")
        self._window = (0, 0, 0)  # (window number, arrivals in it, arrivals in the one before)

    def _count_arrival(self) -> None:
        now = int(self.monotonic() / self.WINDOW_SECONDS)
        number, current, before = self._window
        if now == number:
            self._window = (number, current + 1, before)
        else:
            self._window = (now, 1, current if now == number + 1 else 0)

    def busy(self) -> bool:
        """Whether messages came in at BUSY_PER_SECOND or faster in the current or the last window."""
        now = int(self.monotonic() / self.WINDOW_SECONDS)
        number, current, before = self._window
        threshold = self.BUSY_PER_SECOND * self.WINDOW_SECONDS
        if now == number:
            return max(current, before) >= threshold
        return now == number + 1 and current >= threshold

    async def accept(self, arrival: Arrival) -> bool:
        """Store one message; True when its MessageSid is new. Raises InboxUnavailable when nothing was stored."""
        self._count_arrival()
        return await self._commits.submit(arrival)

    async def _write(self, arrivals: list[Arrival]) -> list[bool]:
        """Whether each arrival's MessageSid is new (the same MessageSid twice in one batch: the first is)."""
        new = await self._insert(arrivals)
        fresh = []
        for arrival in arrivals:
            fresh.append(arrival.provider_id in new)
            new.discard(arrival.provider_id)
        return fresh

    async def _insert(self, arrivals: list[Arrival]) -> set[str]:
        rows = [
            {
                "provider": PROVIDER,
                "provider_id": a.provider_id,
                "received_at": a.received_at,
                "sender_hash": a.sender_hash,
                "sender_enc": a.sender_enc,
                "body": a.body,
                "attempts": 0,
            }
            for a in arrivals
        ]
        async with self.store.transaction() as session:
            inserted = await insert_rows(
                session, InboundMessage, rows, conflict=["provider", "provider_id"], returning=["provider_id"]
            )
            new = {provider_id for (provider_id,) in inserted}
            if new and self.store.dialect == "postgresql":
                # Delivered at commit to every drainer listening, in whichever process.
                await session.exec(text(f"NOTIFY {NOTIFY_CHANNEL}"))  # type: ignore[call-overload]
            return new

    async def close(self) -> None:
        await self._commits.close()


def _unavailable(error: BaseException) -> BaseException:
    """What a webhook whose message could not be stored gets: 503, so that Twilio sends it again."""
    if not isinstance(error, asyncio.CancelledError):
        log.error("inbound SMS could not be stored; the webhook answers 503", exc_info=error)
    return InboxUnavailable()


@dataclass(frozen=True)
class Pending:
    id: int
    sender_hash: str
    sender_enc: str | None
    body: str
    received_at: datetime
    attempts: int
    error: str | None


@dataclass(frozen=True)
class InboxPolicy:
    batch_size: int = 64
    # Messages of different senders handled in one transaction (`dialogue.converse_group`).
    group_size: int = 32
    lease_seconds: int = 60
    max_attempts: int = 5
    # Conversations processed side by side: each holds a database connection while it runs, so more
    # than the pool has only makes connections open and close.
    concurrency: int = 8


class InboxDrainer:
    """Processes stored inbound SMS through the conversation runner; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        *,
        policy: InboxPolicy,
        on_replies: Callable[[], None] = lambda: None,
        intake_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.runner, self.policy, self.on_replies = runner, policy, on_replies
        # Webhooks first: while the same process is taking messages in, one conversation at a time.
        self.intake_busy = intake_busy
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()
        self._running = 0
        self._flowing: set[asyncio.Task[None]] = set()  # groups started by `flow_once`, still running

    @property
    def store(self) -> Store:
        return self.runner.store

    def wake(self) -> None:
        """Ask the loop to look at the inbox now (after the webhook stored something)."""
        self._wake.set()

    async def claim(self, limit: int | None = None) -> list[Pending]:
        """Lease the earliest pending message of up to `limit` (batch_size) senders whose earlier messages are done."""
        now = self.runner.deps.clock.now()
        m = InboundMessage
        earlier = aliased(InboundMessage)
        pending = inbox_state_is(col(m.state), "pending")
        free = or_(col(m.lease_until).is_(None), col(m.lease_until) < now)
        # The sender's earliest pending message, as a correlated subquery: it is looked up per candidate
        # in ix_inbound_pending whatever the planner believes about the table (a fresh inbox has no
        # statistics, and an anti-join planned for one row would scan the whole backlog per candidate).
        first_of_sender = (
            select(func.min(earlier.id))
            .where(earlier.sender_hash == m.sender_hash, inbox_state_is(col(earlier.state), "pending"))
            .scalar_subquery()
        )
        async with self.store.transaction() as session:
            ids = (
                await session.exec(
                    select(m.id)
                    .where(pending, free, col(m.id) == first_of_sender)
                    .order_by(col(m.id))
                    .limit(limit or self.policy.batch_size)
                )
            ).all()
            if not ids:
                return []
            # Re-checked in the UPDATE: of two drainers that chose the same message, one gets it.
            claimed = await session.exec(
                update(m)  # type: ignore[call-overload, misc]
                .where(in_set(col(m.id), "ids"), pending, free)
                .values(lease_until=now + timedelta(seconds=self.policy.lease_seconds), attempts=m.attempts + 1)
                .returning(m.id, m.sender_hash, m.sender_enc, m.body, m.received_at, m.attempts, m.error),
                params={"ids": list(ids)},
            )
            batch = sorted((Pending(*row) for row in claimed.all()), key=lambda p: p.id)
            # The senders' citizens in the same round trip budget: one query for the whole batch.
            unknown = {p.sender_hash for p in batch} - self.runner.citizen_ids.keys()
            if unknown:
                found = await session.exec(
                    select(Citizen.id, Citizen.phone_hash).where(in_set(col(Citizen.phone_hash), "hashes")),
                    params={"hashes": sorted(unknown)},
                )
                for citizen_id, phone_hash in found.all():
                    if citizen_id is not None and phone_hash is not None:
                        self.runner.remember(phone_hash, citizen_id)
        return batch

    async def drain_once(self) -> int:
        """One pass: claim a batch and process it (different senders side by side); returns how many."""
        watch = self.runner.redis_watch
        if watch is not None and not await watch.ready():
            return 0  # paused: the conversation cannot run without its state; nothing is claimed
        # While webhooks come in, a small batch (one group): its messages wait their turn one group at a
        # time, and a lease must not run out on a message still waiting.
        busy = self.intake_busy()
        batch = await self.claim(min(self.policy.batch_size, max(4, self.policy.group_size)) if busy else None)
        for outcome in await asyncio.gather(*(self._in_turn(g) for g in self._groups(batch)), return_exceptions=True):
            if isinstance(outcome, Exception):  # the messages stay leased and come back after the lease
                log.error("inbox messages could not be handled", exc_info=outcome)
        return len(batch)

    def _limit(self) -> int:
        return 1 if self.intake_busy() else self.policy.concurrency

    async def flow_once(self) -> int:
        """The background loop's pass: claim as much as there is room for and start it, without waiting
        for it to finish, so that the next claim overlaps the groups still running instead of waiting
        for the slowest of a batch. At most `_limit()` groups are in flight (claimed messages do not sit
        waiting for a turn while their leases run); with no room the pass claims nothing, and a group
        that finishes wakes the loop. A sender's next message is not claimed while one of theirs is in
        flight (`claim`), so each sender's messages still go in order. Returns how many messages were
        claimed."""
        watch = self.runner.redis_watch
        if watch is not None and not await watch.ready():
            return 0
        room = (self._limit() - len(self._flowing)) * self.policy.group_size
        if room <= 0:
            return 0
        batch = await self.claim(min(room, self.policy.batch_size))
        for group in self._groups(batch):
            task = asyncio.create_task(self._in_turn(group), name="sms-inbox-group")
            self._flowing.add(task)
            task.add_done_callback(self._flowed)
        return len(batch)

    def _groups(self, batch: list[Pending]) -> list[list[Pending]]:
        size = self.policy.group_size
        return [batch[i : i + size] for i in range(0, len(batch), size)]

    def _flowed(self, task: asyncio.Task[None]) -> None:
        self._flowing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The messages stay leased and come back after the lease.
            log.error("inbox messages could not be handled", exc_info=error)
        self._wake.set()  # room for more, and the senders of this group may have their next message

    async def _finish_flowing(self) -> None:
        """On stopping: the groups in flight finish (up to the loops' stop grace), the rest are cut (their
        messages come back after their leases)."""
        if self._flowing:
            _done, cut = await asyncio.wait(set(self._flowing), timeout=STOP_GRACE_SECONDS)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)

    async def _in_turn(self, group: list[Pending]) -> None:
        while self._running >= self._limit():
            self._freed.clear()
            await self._freed.wait()
        watch = self.runner.redis_watch
        if watch is not None and not watch.available:
            for message in group:
                await self._give_back(message)  # Redis went while it waited its turn
            return
        self._running += 1
        try:
            if len(group) == 1 or not await self._process_group(group):
                for message in group:
                    await self._process(message)
        finally:
            self._running -= 1
            self._freed.set()

    async def _process_group(self, group: list[Pending]) -> bool:
        """The group's messages in one transaction (`converse_group`); False, with nothing done, when
        they must go one by one instead: one is due to be set aside, one's sender cannot be resolved yet,
        a conversation is busy elsewhere or refused, or the group failed."""
        if any(message.attempts > self.policy.max_attempts for message in group):
            return False
        try:
            inputs = [
                GroupInput(
                    citizen_id=await self._citizen(message),
                    inbound=Inbound(kind="text", at=as_utc(message.received_at), text=message.body),
                    inbox_id=message.id,
                )
                for message in group
            ]
            outcomes = await converse_group(self.runner, channel="sms", inputs=inputs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            watch = self.runner.redis_watch
            if watch is not None and is_outage(exc):
                watch.report(exc)
                for message in group:
                    await self._give_back(message)
                return True  # handled: given back untried, as one message alone would be
            log.warning("a group of inbox messages failed; each goes alone", exc_info=True)
            return False
        if outcomes is None:
            return False
        if any(outcome.replies for outcome in outcomes):
            self.on_replies()
        return True

    async def drain(self) -> int:
        """Passes until nothing is ready (messages waiting out a failure's lease stay for later)."""
        total = 0
        while handled := await self.drain_once():
            total += handled
        return total

    async def run_forever(self, interval_seconds: float) -> None:
        """The background loop owned by the app (and by `gateway worker`). On PostgreSQL it also
        listens for the writers' NOTIFY, so a worker starts on a new message at once instead of at
        its next poll; polling stays, for a lost listening connection and for retries coming due."""
        listening = (
            asyncio.create_task(self._listen(), name="sms-inbox-listen") if self.store.dialect == "postgresql" else None
        )
        try:
            await run_passes(self.flow_once, interval_seconds=interval_seconds, what="inbox", wake=self._wake)
        finally:
            await self._finish_flowing()
            if listening is not None:
                listening.cancel()
                await asyncio.gather(listening, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            try:
                async with self.store.engine.connect() as connection:
                    raw = (await connection.get_raw_connection()).driver_connection
                    if raw is None:
                        raise BrokenInvariant("raw is missing")
                    lost = asyncio.Event()

                    def notified(*_args: object) -> None:
                        self.wake()

                    def terminated(_conn: object, lost: asyncio.Event = lost) -> None:
                        lost.set()

                    raw.add_termination_listener(terminated)
                    try:
                        await raw.add_listener(NOTIFY_CHANNEL, notified)
                        while not lost.is_set():
                            try:
                                await asyncio.wait_for(lost.wait(), timeout=LISTEN_CHECK_SECONDS)
                            except TimeoutError:
                                # A connection dropped without a word (a NAT, a failover) is found here.
                                await asyncio.wait_for(raw.fetchval("SELECT 1"), timeout=10)
                        log.warning("inbox listener lost its connection; polling meanwhile")
                    finally:
                        # UNLISTEN before the connection goes back to the pool (not possible once it is lost).
                        raw.remove_termination_listener(terminated)
                        if not raw.is_closed():
                            await asyncio.shield(raw.remove_listener(NOTIFY_CHANNEL, notified))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("inbox listener lost its connection; polling meanwhile", exc_info=True)
            await asyncio.sleep(5)

    async def _process(self, message: Pending) -> None:
        if message.attempts > self.policy.max_attempts:
            await self._set_aside(message)
            return
        try:
            citizen_id = await self._citizen(message)
            outcome = await converse(
                self.runner,
                channel="sms",
                citizen_id=citizen_id,
                inbox_id=message.id,
                inbound=Inbound(kind="text", at=as_utc(message.received_at), text=message.body),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            watch = self.runner.redis_watch
            if watch is not None and is_outage(exc):
                watch.report(exc)
                await self._give_back(message)
                return
            log.exception(
                "inbound SMS failed; it stays in the inbox for another try",
                extra={"inbox_id": message.id, "attempt": message.attempts},
            )
            await self._failed(message, redact(f"{type(exc).__name__}: {exc}"))
            return
        if outcome.replies:
            self.on_replies()

    async def _citizen(self, message: Pending) -> int:
        runner = self.runner
        citizen_id = runner.citizen_ids.get(message.sender_hash)
        if citizen_id is None:
            if message.sender_enc is None:
                raise ValueError("pending message without its sender")
            citizen_id = await citizen_for_phone(
                runner.store, runner.deps, runner.deps.vault.decrypt(message.sender_enc)
            )
            runner.remember(message.sender_hash, citizen_id)
        return citizen_id

    async def _failed(self, message: Pending, error: str) -> None:
        """Keep the message pending; its next try comes after a backoff (shorter than the lease)."""
        now = self.runner.deps.clock.now()
        backoff = min(self.policy.lease_seconds, 5 * 2 ** (message.attempts - 1))
        async with self.store.transaction() as session:
            await session.exec(
                update(InboundMessage)
                .where(col(InboundMessage.id) == message.id, inbox_state_is(col(InboundMessage.state), "pending"))
                .values(error=error[:200], lease_until=now + timedelta(seconds=backoff))
            )

    async def _give_back(self, message: Pending) -> None:
        """Return a claimed message untried: pending at once, its attempt not counted (an outage of
        Redis is not the message's failure)."""
        async with self.store.transaction() as session:
            await session.exec(
                update(InboundMessage)
                .where(col(InboundMessage.id) == message.id, inbox_state_is(col(InboundMessage.state), "pending"))
                .values(lease_until=None, attempts=InboundMessage.attempts - 1)
            )

    async def _set_aside(self, message: Pending) -> None:
        now = self.runner.deps.clock.now()
        reason = f"given up after {self.policy.max_attempts} attempts; last: {message.error or 'unknown'}"
        log.error("inbound SMS set aside after repeated failures", extra={"inbox_id": message.id})
        async with self.store.transaction() as session:
            await session.exec(
                update(InboundMessage)
                .where(col(InboundMessage.id) == message.id, inbox_state_is(col(InboundMessage.state), "pending"))
                .values(state="dead", processed_at=now, lease_until=None, error=reason[:200])
            )


async def citizen_for_phone(store: Store, deps: Deps, phone: str) -> int:
    """The citizen behind a number, created on first contact (needed to answer through the outbox)."""
    phone_hash = deps.vault.lookup_hash(phone)
    for _ in range(2):
        async with store.transaction() as session:
            found = (await session.exec(select(Citizen.id).where(Citizen.phone_hash == phone_hash))).first()
            if found is not None:
                return found
            try:
                citizen = Citizen(
                    phone_hash=phone_hash,
                    phone_enc=deps.vault.encrypt(phone),
                    phone_masked=mask_phone(phone),
                    created_at=deps.clock.now(),
                )
                async with session.begin_nested():
                    session.add(citizen)
                    await session.flush()
                if citizen.id is None:
                    raise BrokenInvariant("citizen.id is missing")
                return citizen.id
            except IntegrityError:
                continue  # created by a concurrent message from the same number: read it
    raise RuntimeError("could not resolve the sender")


async def inbox_status(store: Store, now: datetime) -> dict[str, int | float | None]:
    """The backlog, the age of its oldest message (None when empty) and the messages set aside: what
    `/metrics` and `gateway inbox` show."""
    m = InboundMessage
    async with store.transaction() as session:
        pending, oldest = (
            await session.exec(select(func.count(), func.min(m.received_at)).where(text(INBOX_PENDING)))
        ).one()
        failed = (await session.exec(select(func.count()).select_from(m).where(text(INBOX_DEAD)))).one()
    age = round(max(0.0, (now - as_utc(oldest)).total_seconds()), 1) if oldest is not None else None
    return {"pending": int(pending), "oldest_pending_seconds": age, "set_aside": int(failed)}
