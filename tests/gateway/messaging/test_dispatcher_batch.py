"""The dispatcher's batch path: permissions taken many at a time, each citizen's order, successes recorded
together, failures and crashes still handled message by message."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlmodel import select

from gateway.messaging.dispatcher import DispatchPolicy, Dispatcher
from gateway.messaging.providers import Outgoing, SendFailed, Sent
from gateway.messaging.ratelimit import LocalRateLimiter, RedisRateLimiter
from gateway.store.models import DeliveryAttempt, OutboundMessage
from gateway.web.keys import DEPS, STORE
from tests.conftest import case_payload


@dataclass
class Recording:
    """A provider that takes a little while, different each time, and records what it was sent."""

    channel: str = "sms"
    sent: list[Outgoing] = field(default_factory=list)
    fail_ids: set[int] = field(default_factory=set)

    async def send(self, message: Outgoing) -> Sent:
        await asyncio.sleep(random.uniform(0, 0.003))
        if message.message_id in self.fail_ids:
            self.fail_ids.discard(message.message_id)
            raise SendFailed("HTTP 503", code="503")
        self.sent.append(message)
        return Sent(provider_message_id=f"SM{message.message_id}")


@dataclass
class CountingLimiter:
    """Grants at most `per_call` sends per `take`, and counts what it granted."""

    per_call: int
    granted: int = 0
    calls: int = 0

    async def acquire(self, key: str, rate_per_second: float | None = None) -> None:
        raise AssertionError("the dispatcher takes permissions in batches")

    async def take(self, key: str, wanted: int, rate_per_second: float | None = None) -> int:
        self.calls += 1
        n = min(wanted, self.per_call)
        self.granted += n
        return n


def _dispatcher(client: Any, provider: Any, limiter: Any, **policy: Any) -> Dispatcher:
    deps = client.app[DEPS]
    return Dispatcher(
        store=client.app[STORE], providers={"sms": provider}, vault=deps.vault, clock=deps.clock, quiet=deps.quiet,
        limiter=limiter, policy=DispatchPolicy(**{"sms_rate_per_second": 1_000_000, **policy}),
    )


async def _prompts(client: Any, world: Any, n: int, phones: int | None = None) -> None:
    items = [case_payload(f"D-{i}", citizen={"phone": f"1390000{i % (phones or n):04d}"}) for i in range(n)]
    resp = await client.post("/api/v1/cases/batch", json={"cases": items}, headers=world.auth("hanbin-market"))
    assert resp.status == 200 and (await resp.json())["created"] == n


async def _messages(client: Any) -> list[OutboundMessage]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(OutboundMessage).order_by(OutboundMessage.id))).all())


async def _attempts(client: Any) -> list[DeliveryAttempt]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).all())


async def test_every_send_has_a_permission_and_permissions_are_taken_in_batches(client, world):
    await _prompts(client, world, 45)
    provider, limiter = Recording(), CountingLimiter(per_call=10)
    assert await _dispatcher(client, provider, limiter, batch_size=100).run_once() == 45
    assert len(provider.sent) == 45
    assert limiter.granted == 45  # no more permissions asked than sends made, and no send without one
    assert limiter.calls == 5  # 10 + 10 + 10 + 10 + 5


async def test_successes_are_recorded_together_as_one_send_each(client, world):
    await _prompts(client, world, 30)
    provider = Recording()
    assert await _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=100).run_once() == 30
    messages = await _messages(client)
    assert {m.status for m in messages} == {"sent"}
    assert all(m.provider_message_id == f"SM{m.id}" and m.sent_at and m.lease_until is None for m in messages)
    attempts = await _attempts(client)
    assert sorted(a.message_id for a in attempts) == [m.id for m in messages]
    assert {a.outcome for a in attempts} == {"sent"}


async def test_each_citizens_messages_go_in_order_while_citizens_go_side_by_side(client, world):
    await _prompts(client, world, 40, phones=4)  # ten prompts for each of four citizens
    provider = Recording()
    await _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=100, concurrency=8).run_once()
    by_number: dict[str, list[int]] = {}
    for message in provider.sent:
        by_number.setdefault(message.to, []).append(message.message_id)
    assert len(by_number) == 4
    assert all(ids == sorted(ids) and len(ids) == 10 for ids in by_number.values())


async def test_a_failure_in_a_batch_is_retried_alone(client, world, clock):
    await _prompts(client, world, 10)
    failing = (await _messages(client))[3].id
    provider = Recording(fail_ids={failing})
    dispatcher = _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=100, base_backoff_seconds=10)
    await dispatcher.run_once()
    statuses = {m.id: m.status for m in await _messages(client)}
    assert statuses.pop(failing) == "queued" and set(statuses.values()) == {"sent"}
    clock.advance(seconds=13)
    assert await dispatcher.run_once() == 1
    assert {m.status for m in await _messages(client)} == {"sent"}
    assert sorted(m.message_id for m in provider.sent) == [m.id for m in await _messages(client)]


async def test_a_crash_before_the_batch_is_recorded_sends_again_and_loses_nothing(client, world, clock, monkeypatch):
    await _prompts(client, world, 6)
    provider = Recording()
    crashed = _dispatcher(client, provider, LocalRateLimiter(1000), lease_seconds=60)

    async def die(sent: Any) -> None:
        raise RuntimeError("killed after sending, before recording")

    monkeypatch.setattr(crashed, "_record_sent", die)
    with pytest.raises(RuntimeError):
        await crashed.run_once()
    assert len(provider.sent) == 6 and {m.status for m in await _messages(client)} == {"sending"}
    survivor = _dispatcher(client, provider, LocalRateLimiter(1000), lease_seconds=60)
    assert await survivor.run_once() == 0  # leased: not sent twice while the lease holds
    clock.advance(seconds=61)
    assert await survivor.run_once() == 6  # at least once: sent again after the lease
    assert {m.status for m in await _messages(client)} == {"sent"}
    assert all(m.attempts == 2 for m in await _messages(client))


async def test_local_limiter_grants_what_the_bucket_holds():
    now = [0.0]
    limiter = LocalRateLimiter(10, monotonic=lambda: now[0])
    assert await limiter.take("sms", 100, 10) == 10  # a full second's burst
    now[0] += 0.5
    assert await limiter.take("sms", 100, 10) == 5
    now[0] += 0.25
    assert await limiter.take("sms", 100, 10) == 2  # whole sends only: the half stays in the bucket
    now[0] += 0.125
    assert await limiter.take("sms", 1, 10) == 1


async def test_redis_limiter_grants_a_window_once_across_processes(redis_url):
    import redis.asyncio as aioredis

    a_client, b_client = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    try:
        a, b = RedisRateLimiter(a_client, 10), RedisRateLimiter(b_client, 10)
        await asyncio.sleep(1 - (time.time() % 1) + 0.01)  # the start of a fresh second: one window
        assert await a.take("sms-take", 7, 10) == 7
        assert await b.take("sms-take", 7, 10) == 3  # what is left of this second
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.take("sms-take", 1, 10), 0.3)  # nothing more in this second
        await b.acquire("sms-take-2", 10)
        assert await a.take("sms-take-2", 20, 10) == 9  # `acquire` and `take` count in the same window
    finally:
        await a_client.aclose()
        await b_client.aclose()


@dataclass
class Watching(Recording):
    """Records, for every send, whether the dispatcher had the next batch's claim under way, and whether
    the batch before was being recorded."""

    dispatcher: Any = None
    ahead: list[bool] = field(default_factory=list)
    while_recording: list[bool] = field(default_factory=list)

    async def send(self, message: Outgoing) -> Sent:
        self.ahead.append(self.dispatcher._next is not None)
        recording = self.dispatcher._recording
        self.while_recording.append(recording is not None and not recording.done())
        return await super().send(message)


async def test_the_loop_claims_the_next_batch_while_one_is_sent_and_keeps_each_citizens_order(client, world):
    await _prompts(client, world, 60, phones=6)  # ten prompts for each of six citizens
    provider = Watching()
    dispatcher = _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=8, concurrency=4)
    provider.dispatcher = dispatcher
    while await dispatcher.run_once(overlap=True):
        pass
    assert any(provider.ahead)  # sends did not wait for the next claim
    assert any(provider.while_recording)  # nor for the record of the batch before
    by_number: dict[str, list[int]] = {}
    for message in provider.sent:
        by_number.setdefault(message.to, []).append(message.message_id)
    assert len(provider.sent) == 60 == len({m.message_id for m in provider.sent})  # each once
    assert all(ids == sorted(ids) for ids in by_number.values())
    assert {m.status for m in await _messages(client)} == {"sent"}


async def test_a_claim_ahead_leaves_the_busy_citizens_messages(client, world):
    await _prompts(client, world, 6, phones=3)
    dispatcher = _dispatcher(client, Recording(), LocalRateLimiter(1000), batch_size=10)
    citizens = {m.citizen_id for m in await _messages(client)}
    busy = frozenset(sorted(citizens)[:2])
    ahead = await dispatcher._claim(busy)
    assert ahead and {m.citizen_id for m in ahead} == citizens - busy


async def test_stopping_gives_back_the_batch_claimed_ahead(client, world):
    await _prompts(client, world, 40)
    provider = Recording()
    dispatcher = _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=10, concurrency=2)
    loop = asyncio.create_task(dispatcher.run_forever(60))
    while len(provider.sent) < 5:
        await asyncio.sleep(0.001)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    messages = await _messages(client)
    sent = {m.message_id for m in provider.sent}
    assert 0 < len(sent) < 40 and {m.status for m in messages} <= {"sent", "queued"}  # none left leased
    for m in messages:
        assert (m.status, m.attempts) == (("sent", 1) if m.id in sent else ("queued", 0))


@dataclass
class Timing(Recording):
    """Records when each message was sent (in order, and by message id)."""

    at: list[float] = field(default_factory=list)
    when: dict[int, float] = field(default_factory=dict)

    async def send(self, message: Outgoing) -> Sent:
        self.at.append(time.monotonic())
        self.when[message.message_id] = self.at[-1]
        return await super().send(message)


async def test_batches_one_after_another_keep_the_rates_pace(client, world):
    rate = 50.0  # one send every 20 ms
    await _prompts(client, world, 20)
    provider = Timing()
    dispatcher = _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=5, sms_rate_per_second=rate)
    while await dispatcher.run_once(overlap=True):
        pass
    assert len(provider.at) == 20
    # Any ten intervals in a row last at least ten intervals of the rate, less the pacing's allowance
    # (sends may run up to the slack ahead of a pace that may start up to the slack behind): a batch that
    # follows another does not start with a burst (four batches: three boundaries inside the run).
    slack = 0.005
    spans = [later - earlier for earlier, later in zip(provider.at, provider.at[10:])]
    assert min(spans) >= 10 / rate - 2 * slack - 0.002, spans


async def test_a_pace_long_past_is_forgotten(client, world):
    await _prompts(client, world, 3)
    dispatcher = _dispatcher(client, Recording(), LocalRateLimiter(1000), batch_size=10)
    dispatcher._pace.update({f"telegram:{chat}": time.monotonic() - 60 for chat in range(1000)})  # chats of long ago
    assert await dispatcher.run_once() == 3
    assert not any(key.startswith("telegram:") for key in dispatcher._pace)  # one entry per chat does not stay
    assert "sms" in dispatcher._pace or any(key.startswith("sms") for key in dispatcher._pace)


async def test_a_batch_is_recorded_before_the_batch_after_next_is_sent(client, world, monkeypatch):
    await _prompts(client, world, 15)  # three batches of five; the second fails whole, so it records nothing
    ids = [m.id for m in await _messages(client)]
    provider = Timing(fail_ids=set(ids[5:10]))
    dispatcher = _dispatcher(client, provider, LocalRateLimiter(1000), batch_size=5)
    real, records = dispatcher._record_sent, []

    async def slow_record(sent):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.2)
        await real(sent)
        records.append((time.monotonic(), {message_id for message_id, _ in sent}))

    monkeypatch.setattr(dispatcher, "_record_sent", slow_record)
    while await dispatcher.run_once(overlap=True):
        pass
    first_recorded = next(at for at, recorded in records if recorded == set(ids[:5]))
    third_sent = min(provider.when[i] for i in ids[10:])
    assert first_recorded <= third_sent
