"""An outage of Redis: webhooks keep being taken, processing pauses and resumes by itself, and no reply
is set aside for it. Redis here is a private `redis-server` this test starts, stops and starts again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from sqlmodel import select

from gateway.app import create_app
from gateway.clock import SystemClock
from gateway.settings import load_settings
from gateway.sms.inbox import inbox_status
from gateway.store.models import InboundMessage
from gateway.web.keys import DISPATCHER, RUNNER, STORE
from tests.conftest import case_payload, register_world
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.fakes.redis_server import private_redis  # noqa: F401  (the fixture)
from tests.gateway.sms.conftest import PUBLIC, Phone

async def until(condition: Callable[[], object], *, timeout: float = 30.0, what: str = "the condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():  # type: ignore[misc]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


CITIZENS = 6


async def test_replies_wait_out_a_redis_outage_and_are_all_answered(
    aiohttp_client, database_url, fake_twilio, private_redis, caplog  # noqa: F811
):  # type: ignore[no-untyped-def]
    # One attempt only and the shortest lease: before, a message that met the outage was set aside after
    # its second claim, five seconds later. The real clock: leases and backoffs must run out by themselves.
    settings = load_settings(
        database_url=database_url, public_url=PUBLIC, sms_provider="twilio", redis_url=private_redis.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url, quiet_hours="", run_dispatcher=True, dispatch_interval_seconds=0.2,
        inbox_max_attempts=1, inbox_lease_seconds=5,
    )
    clock = SystemClock()
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False))
    world = await register_world(client.app[STORE], clock)  # type: ignore[arg-type]
    numbers = [f"+86139000000{i:02d}" for i in range(CITIZENS)]
    completed = datetime.now(timezone.utc).isoformat()
    for i, number in enumerate(numbers):
        payload = case_payload(f"OUT-{i}", completed_at=completed, citizen={"phone": number[3:]})
        assert (await client.post("/api/v1/cases", json=payload, headers=world.auth("hanbin-market"))).status == 201

    def answers_to(number: str) -> list[str]:
        return [r.form["Body"] for r in fake_twilio.sent if r.form.get("To") == number and "已记录" in r.form["Body"]]

    phones = [Phone(client, number) for number in numbers]
    for i, phone in enumerate(phones):
        phone.count = 100 * i
    await phones[0].text("5", drain=False)  # Redis up: answered as usual
    await until(lambda: _true(answers_to(numbers[0])), what="the first answer")

    caplog.set_level(logging.INFO)
    caplog.clear()
    private_redis.stop()
    # A trickle of signed webhooks while Redis is down: every one is taken.
    for phone in phones[1:]:
        assert (await phone.text("4", drain=False)).status == 200
        await asyncio.sleep(0.5)
    assert (await phones[1].text("2", drain=False)).status == 200  # the same citizen again: after the 4, in order
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["processing"] == "not ready"
    await asyncio.sleep(7)  # longer than a failed message's backoff and lease: before, set aside by now

    async with client.app[STORE].transaction() as session:
        waiting = (await session.exec(select(InboundMessage).where(InboundMessage.state == "pending"))).all()
    assert len(waiting) == len(phones[1:]) + 1  # none processed, none set aside
    assert all(m.attempts == 0 and m.error is None for m in waiting)
    assert not client.app[RUNNER].redis_watch.available

    await private_redis.start()  # Redis is back: processing resumes by itself
    for number in numbers[2:]:
        await until(lambda n=number: _true(answers_to(n)), what=f"the answer to {number[-4:]}")
    await until(lambda: _true(len(answers_to(numbers[1])) == 2), what="both answers to the citizen who wrote twice")
    assert "满意" in answers_to(numbers[1])[0] and "不满意" in answers_to(numbers[1])[1]
    status = await inbox_status(client.app[STORE], clock.now())
    assert status["pending"] == 0 and status["set_aside"] == 0

    records = [r for r in caplog.records if r.name.startswith("gateway")]
    assert [r.getMessage()[:24] for r in records if "Redis" in r.getMessage()] == [
        "Redis is unreachable (Co", "Redis answers again afte",
    ]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]
    assert (await client.get("/readyz/processing")).status == 200
    assert client.app[DISPATCHER] is not None


async def test_sends_go_on_while_redis_is_down(
    aiohttp_client, database_url, fake_twilio, private_redis, caplog  # noqa: F811
):  # type: ignore[no-untyped-def]
    """The dispatcher's shared rate limit falls back to one in the process: prompts still go out, once."""
    from tests.conftest import START
    from gateway.clock import FrozenClock

    settings = load_settings(
        database_url=database_url, public_url=PUBLIC, sms_provider="twilio", redis_url=private_redis.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url, run_dispatcher=False,
    )
    clock = FrozenClock(START)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(client.app[STORE], clock)
    private_redis.stop()
    caplog.set_level(logging.INFO)
    for i in range(3):
        payload = case_payload(f"SEND-{i}", citizen={"phone": f"1390000010{i}"})
        assert (await client.post("/api/v1/cases", json=payload, headers=world.auth("hanbin-market"))).status == 201
    assert await client.app[DISPATCHER].run_once() == 3
    assert len(fake_twilio.sent) == 3
    assert await client.app[DISPATCHER].run_once() == 0  # sent once, nothing left to retry
    assert not [r for r in caplog.records if r.exc_info]
    assert sum("Redis is unreachable" in r.getMessage() for r in caplog.records) == 1


async def _true(value: object) -> bool:
    return bool(value)


async def test_timers_wait_for_redis_and_fire_once_it_is_back(
    aiohttp_client, database_url, fake_twilio, private_redis, caplog  # noqa: F811
):  # type: ignore[no-untyped-def]
    """The reasons reminder of a bad rating: not fired (nor used up) during the outage, fired after it."""
    from datetime import timedelta

    from gateway.clock import FrozenClock
    from gateway.dialogue import fire_timers
    from gateway.store.models import ConversationTimer
    from tests.conftest import START

    settings = load_settings(
        database_url=database_url, public_url=PUBLIC, sms_provider="twilio", redis_url=private_redis.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url, run_dispatcher=False, reminder_after_seconds=600,
    )
    clock = FrozenClock(START)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(client.app[STORE], clock)
    assert (await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))).status == 201
    await Phone(client).text("2")  # a bad rating: the reasons are asked, and a reminder is scheduled
    runner = client.app[RUNNER]
    clock.advance(seconds=601)
    private_redis.stop()
    caplog.set_level(logging.INFO)
    assert await fire_timers(runner) == 0
    runner.redis_watch._next_probe = 0.0  # the next probe is due now rather than after the backoff
    assert await fire_timers(runner) == 0
    async with client.app[STORE].transaction() as session:
        assert len((await session.exec(select(ConversationTimer))).all()) == 1  # still there
    assert not [r for r in caplog.records if r.exc_info]
    await private_redis.start()
    runner.redis_watch._next_probe = 0.0
    assert await fire_timers(runner) == 1
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(ConversationTimer))).all() == []
    assert clock.now() - START > timedelta(seconds=600)
