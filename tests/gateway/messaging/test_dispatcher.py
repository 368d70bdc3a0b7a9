"""The outbox and its dispatcher: at least once, retries with backoff, leases, quiet hours, opt-outs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from gateway.messaging.dispatcher import DispatchPolicy, Dispatcher
from gateway.messaging.providers import Outgoing, SendFailed, Sent
from gateway.messaging.quiet import QuietHours
from gateway.messaging.ratelimit import LocalRateLimiter
from gateway.store.models import Citizen, DeliveryAttempt, OutboundMessage
from gateway.web.keys import DEPS, DISPATCHER, PROVIDERS, STORE
from tests.gateway.evaluations.helpers import report


@dataclass
class ScriptedProvider:
    """A provider whose answers a test scripts: a list of exceptions to raise before succeeding."""

    channel: str = "sms"
    failures: list[SendFailed] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)

    async def send(self, message: Outgoing) -> Sent:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return Sent(provider_message_id=f"P{message.message_id}")


async def _messages(client) -> list[OutboundMessage]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(OutboundMessage).order_by(OutboundMessage.id))).all())


async def _attempts(client) -> list[DeliveryAttempt]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).all())


def _dispatcher(client, provider, **policy) -> Dispatcher:
    deps = client.app[DEPS]
    return Dispatcher(
        store=client.app[STORE], providers={"sms": provider}, vault=deps.vault, clock=deps.clock, quiet=deps.quiet,
        limiter=LocalRateLimiter(1000), policy=DispatchPolicy(**policy),
    )


async def test_queued_prompt_is_sent_with_the_real_number(client, world):
    await report(client, world)
    assert await client.app[DISPATCHER].run_once() == 1
    sent = client.app[PROVIDERS]["sms"].sent
    assert len(sent) == 1 and sent[0].to == "+8613812341234"
    (message,) = await _messages(client)
    assert sent[0].status_callback == f"http://gateway.test/webhooks/twilio/status?m={message.id}"
    assert message.status == "delivered" and message.provider_message_id and message.attempts == 1
    assert [a.outcome for a in await _attempts(client)] == ["sent"]
    assert await client.app[DISPATCHER].run_once() == 0  # nothing is sent twice


async def test_crash_between_claim_and_send_loses_nothing(client, world, clock):
    await report(client, world)
    provider = ScriptedProvider()
    crashed = _dispatcher(client, provider, lease_seconds=60)
    claimed = await crashed.claim()  # ...and the process dies here, before sending
    assert len(claimed) == 1
    survivor = _dispatcher(client, provider, lease_seconds=60)
    assert await survivor.run_once() == 0  # the lease still holds: no double send
    clock.advance(seconds=61)
    assert await survivor.run_once() == 1
    assert len(provider.sent) == 1
    (message,) = await _messages(client)
    assert message.status == "sent" and message.attempts == 2


async def test_retryable_failures_back_off_then_succeed(client, world, clock):
    await report(client, world)
    provider = ScriptedProvider(failures=[SendFailed("HTTP 500", code="500"), SendFailed("HTTP 429", code="429", retry_after_seconds=30)])
    dispatcher = _dispatcher(client, provider, base_backoff_seconds=10)
    assert await dispatcher.run_once() == 1
    (message,) = await _messages(client)
    assert message.status == "queued" and message.error_code == "500"
    wait = (message.next_attempt_at.replace(tzinfo=timezone.utc) - clock.now()).total_seconds()
    assert 8 <= wait <= 12  # first backoff: 10 s with jitter
    assert await dispatcher.run_once() == 0
    clock.advance(seconds=12)
    assert await dispatcher.run_once() == 1
    (message,) = await _messages(client)
    wait = (message.next_attempt_at.replace(tzinfo=timezone.utc) - clock.now()).total_seconds()
    assert wait == pytest.approx(30)  # the provider's Retry-After wins
    clock.advance(seconds=30)
    assert await dispatcher.run_once() == 1
    (message,) = await _messages(client)
    assert message.status == "sent" and message.attempts == 3 and len(provider.sent) == 1
    assert [a.outcome for a in await _attempts(client)] == ["retry", "retry", "sent"]


async def test_permanent_failure_stops_and_opt_out_is_recorded(client, world):
    await report(client, world)
    provider = ScriptedProvider(failures=[SendFailed("unsubscribed", code="21610", permanent=True, opt_out=True)])
    assert await _dispatcher(client, provider).run_once() == 1
    (message,) = await _messages(client)
    assert message.status == "failed" and message.error_code == "21610"
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(Citizen))).one().sms_opted_out_at is not None


async def test_gives_up_after_max_attempts(client, world, clock):
    await report(client, world)
    provider = ScriptedProvider(failures=[SendFailed("down", code="503", retry_after_seconds=1) for _ in range(5)])
    dispatcher = _dispatcher(client, provider, max_attempts=3)
    for _ in range(3):
        await dispatcher.run_once()
        clock.advance(seconds=2)
    (message,) = await _messages(client)
    assert message.status == "failed" and message.attempts == 3 and provider.sent == []


async def test_opt_out_after_queueing_is_honoured_at_dispatch(client, world):
    await report(client, world)
    async with client.app[STORE].transaction() as session:
        citizen = (await session.exec(select(Citizen))).one()
        citizen.sms_opted_out_at = datetime.now(timezone.utc)
    provider = ScriptedProvider()
    await _dispatcher(client, provider).run_once()
    (message,) = await _messages(client)
    assert message.status == "suppressed" and provider.sent == []


async def test_prompts_wait_for_the_end_of_quiet_hours(client, world, clock):
    # 22:30 Shanghai: the prompt waits until 08:00 the next morning.
    clock.set(datetime(2026, 3, 4, 14, 30, tzinfo=timezone.utc))
    body = await report(client, world, completed_at="2026-03-04T22:00:00+08:00")
    assert body["messages_queued"][0]["not_before"].startswith("2026-03-05T00:00:00")
    provider = ScriptedProvider()
    dispatcher = _dispatcher(client, provider)
    assert await dispatcher.run_once() == 0
    clock.set(datetime(2026, 3, 4, 23, 59, tzinfo=timezone.utc))
    assert await dispatcher.run_once() == 0
    clock.set(datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc))
    assert await dispatcher.run_once() == 1 and len(provider.sent) == 1


async def test_a_daytime_prompt_that_reaches_the_dispatcher_at_night_waits(client, world, clock):
    await report(client, world)  # queued at 10:00
    clock.set(datetime(2026, 3, 4, 13, 30, tzinfo=timezone.utc))  # 21:30 local when the dispatcher gets to it
    provider = ScriptedProvider()
    await _dispatcher(client, provider).run_once()
    (message,) = await _messages(client)
    assert provider.sent == [] and message.status == "queued" and message.attempts == 0
    assert message.next_attempt_at.replace(tzinfo=timezone.utc) == datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc)


def test_quiet_hours_window_edges():
    quiet = QuietHours((datetime.strptime("21:00", "%H:%M").time(), datetime.strptime("08:00", "%H:%M").time()))
    at = lambda h, m: datetime(2026, 3, 4, h, m, tzinfo=timezone(timedelta(hours=8)))  # noqa: E731
    assert not quiet.is_quiet(at(20, 59)) and quiet.is_quiet(at(21, 0)) and quiet.is_quiet(at(7, 59))
    assert not quiet.is_quiet(at(8, 0))
    assert quiet.hold_until("reply", at(23, 0)) is None  # answers to a citizen who wrote are not held
    assert quiet.hold_until("prompt", at(23, 0)) == datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc)
    assert quiet.hold_until("prompt", at(3, 0)) == datetime(2026, 3, 4, 0, 0, tzinfo=timezone.utc)
    assert QuietHours(None).hold_until("prompt", at(23, 0)) is None


async def test_two_dispatchers_never_claim_the_same_message(client, world):
    for i in range(30):
        await report(client, world, case_no=f"CASE-{i}", citizen={"phone": f"138000{i:05d}"})
    a, b = _dispatcher(client, ScriptedProvider(), batch_size=20), _dispatcher(client, ScriptedProvider(), batch_size=20)
    first, second = await asyncio.gather(a.claim(), b.claim())
    assert set(first).isdisjoint(second)
    assert len(first) + len(second) == 30


async def test_console_provider_masks_numbers_in_its_log(client, world, caplog):
    caplog.set_level("DEBUG")
    await report(client, world)
    await client.app[DISPATCHER].run_once()
    assert "138****1234" in caplog.text
    assert "13812341234" not in caplog.text
