"""The SMS inbox: the webhook stores a signed reply and answers; the drainer processes it, once, in order."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event
from sqlmodel import select

from gateway.app import create_app
from gateway.sms import inbox as inbox_module
from gateway.sms.inbox import InboxDrainer, InboxPolicy, inbox_status
from gateway.store.models import Evaluation, EvaluationAddendum, InboundMessage, OutboundMessage
from gateway.web.keys import INBOX, INBOX_WRITER, RUNNER, STORE
from tests.gateway.evaluations.helpers import count, report
from tests.gateway.sms.conftest import Phone
from tests.waiting import until


async def _rows(client, model, *where):
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(model).where(*where).order_by(model.id))).all())


async def test_the_webhook_stores_the_reply_and_the_drainer_processes_it(client, world, phone, clock):
    await report(client, world)
    resp = await phone.text("2", drain=False)
    assert resp.status == 200 and "<Response>" in await resp.text()

    (stored,) = await _rows(client, InboundMessage)
    assert stored.body == "2" and stored.processed_at is None and stored.sender_hash
    assert stored.sender_enc and "13812341234" not in stored.sender_enc  # the number only encrypted
    assert await count(client, Evaluation) == 0 and (await inbox_status(client.app[STORE], clock.now()))["pending"] == 1

    assert await client.app[INBOX].drain() == 1
    (evaluation,) = await _rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel) == (2, "sms")
    (done,) = await _rows(client, InboundMessage)
    assert done.processed_at is not None and done.citizen_id == evaluation.citizen_id
    assert done.body is None and done.sender_enc is None  # nothing of the message is kept beyond its effects
    assert (await inbox_status(client.app[STORE], clock.now()))["pending"] == 0
    assert await client.app[INBOX].drain() == 0  # processed once


async def test_one_senders_messages_are_processed_one_at_a_time_in_order(client, world, phone):
    await report(client, world)
    await report(client, world, case_no="HB-2026-0002", citizen={"phone": "13900001111"})
    other = Phone(client, "+8613900001111")
    await phone.text("2", drain=False)
    await phone.text("1 3 窗口让我跑了三趟", drain=False)
    await other.text("4", drain=False, sid="SM" + "c" * 32)

    drainer = client.app[INBOX]
    first = await drainer.claim()  # the second message of the first sender waits for the first
    assert [p.body for p in first] == ["2", "4"]
    assert await drainer.claim() == []  # leased: not claimed twice

    client.app[RUNNER].deps.clock.advance(seconds=61)  # the lease runs out, as after a crashed drainer
    assert await drainer.drain() == 3
    evaluations = await _rows(client, Evaluation)
    assert sorted(e.level for e in evaluations) == [2, 4]
    (addendum,) = await _rows(client, EvaluationAddendum)
    assert addendum.reason_codes == [207, 209] and addendum.content == "窗口让我跑了三趟"


async def test_a_failure_mid_processing_leaves_the_message_for_a_later_try(client, world, phone, clock, monkeypatch):
    await report(client, world)
    real = inbox_module.converse
    calls = {"n": 0}

    async def crash_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away for 13812341234")
        return await real(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", crash_once)
    await phone.text("5")
    (stored,) = await _rows(client, InboundMessage)
    assert stored.processed_at is None and stored.body == "5" and stored.attempts == 1
    assert stored.error.startswith("RuntimeError") and "13812341234" not in stored.error  # masked
    assert await count(client, Evaluation) == 0
    assert await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply") == []

    assert await client.app[INBOX].drain() == 0  # it waits out its backoff
    clock.advance(seconds=6)
    assert await client.app[INBOX].drain() == 1
    (evaluation,) = await _rows(client, Evaluation)
    assert evaluation.level == 5
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 1
    (done,) = await _rows(client, InboundMessage)
    assert done.processed_at is not None and done.error is None and done.attempts == 2


async def test_a_message_that_keeps_failing_is_set_aside_and_the_next_goes_on(client, world, phone, clock, monkeypatch):
    await report(client, world)
    real = inbox_module.converse
    tries = {"n": 0}

    async def refuse_fives(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs["inbound"].text == "5":
            tries["n"] += 1
            raise ValueError("cannot process this one")
        return await real(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", refuse_fives)
    await phone.text("5", drain=False)
    await phone.text("4", drain=False)
    drainer = client.app[INBOX]
    for _ in range(8):
        await drainer.drain()
        clock.advance(seconds=61)
    first, second = await _rows(client, InboundMessage)
    assert tries["n"] == 5  # GATEWAY_INBOX_MAX_ATTEMPTS (5): exactly that many tries, then set aside
    assert first.processed_at is not None and first.error.startswith("given up after 5 attempts")
    assert first.body == "5" and first.sender_enc  # kept for an operator to look at
    assert second.processed_at is not None and second.error is None
    (evaluation,) = await _rows(client, Evaluation)
    assert evaluation.level == 4
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_sms_inbox_messages{state="failed"} 1.0' in metrics
    assert 'gateway_sms_inbox_messages{state="pending"} 0.0' in metrics
    assert "gateway_sms_inbox_oldest_pending_seconds 0.0" in metrics


async def test_metrics_show_how_long_the_oldest_waiting_reply_has_waited(client, world, phone, clock):
    await phone.text("你好", drain=False)
    clock.advance(seconds=42)
    await phone.text("你好", drain=False)
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_sms_inbox_messages{state="pending"} 2.0' in metrics
    assert "gateway_sms_inbox_oldest_pending_seconds 42.0" in metrics


async def test_concurrent_webhooks_share_one_write_and_duplicates_act_once(client, world):
    phones = [Phone(client, f"+86139{i:08d}") for i in range(30)]
    statements: list[str] = []
    engine = client.app[STORE].engine.sync_engine

    def seen(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO inbound_message"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        posts = [p.text("你好", drain=False, sid=f"SM{i:032x}") for i, p in enumerate(phones)]
        posts += [phones[i].text("你好", drain=False, sid=f"SM{i:032x}") for i in range(5)]  # Twilio's retries
        responses = await asyncio.gather(*posts)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert {r.status for r in responses} == {200}
    assert await count(client, InboundMessage) == 30
    assert len(statements) < 35  # requests waiting together were written together
    assert await client.app[INBOX].drain() == 30
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 30


async def test_a_message_that_cannot_be_stored_gets_503_and_spares_its_neighbours(client, world, monkeypatch):
    writer = client.app[INBOX_WRITER]
    real = writer._insert

    async def refuse_boom(arrivals):  # type: ignore[no-untyped-def]
        if any(a.body == "boom" for a in arrivals):
            raise OSError("disk full")
        return await real(arrivals)

    monkeypatch.setattr(writer, "_insert", refuse_boom)
    good = [Phone(client, f"+86139{i:08d}").text("你好", drain=False, sid=f"SM{i:032x}") for i in range(6)]
    bad = Phone(client, "+8613900009999").text("boom", drain=False, sid="SM" + "f" * 32)
    responses = await asyncio.gather(*good, bad)
    assert [r.status for r in responses] == [200] * 6 + [503]  # only the one that was not stored
    stored = await _rows(client, InboundMessage)
    assert len(stored) == 6 and all(m.body == "你好" for m in stored)


async def test_a_stored_message_survives_a_gateway_restart(aiohttp_client, settings, clock):
    from tests.conftest import register_world

    first = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(first.app[STORE], clock)
    await report(first, world)
    await Phone(first).text("1", drain=False)
    await first.close()  # stops before anything processed the message

    second = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    assert await second.app[INBOX].drain() == 1
    (evaluation,) = await _rows(second, Evaluation)
    assert evaluation.level == 1 and evaluation.channel == "sms"


async def test_two_drainers_never_process_a_message_twice(client, world):
    phones = [Phone(client, f"+86139{i:08d}") for i in range(12)]
    for i, p in enumerate(phones):
        await p.text("你好", drain=False, sid=f"SM{i:032x}")
        await p.text("帮助", drain=False, sid=f"SM{100 + i:032x}")
    app = client.app
    other = InboxDrainer(app[RUNNER], policy=InboxPolicy(batch_size=5))
    done = await asyncio.gather(app[INBOX].drain(), other.drain())
    assert sum(done) == 24
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 24
    assert (await inbox_status(app[STORE], app[RUNNER].deps.clock.now()))["pending"] == 0


async def test_while_webhooks_come_in_the_same_process_runs_one_conversation_at_a_time(client, world, monkeypatch):
    for i in range(12):
        await Phone(client, f"+86139{i:08d}").text("你好", drain=False, sid=f"SM{i:032x}")
    real, running, most = inbox_module.converse, [0], [0]

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await asyncio.sleep(0.01)
            return await real(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(inbox_module, "converse", counted)
    alone = {"group_size": 1}  # each message alone: the turns are counted per conversation
    busy = InboxDrainer(
        client.app[RUNNER], policy=InboxPolicy(batch_size=6, concurrency=4, **alone), intake_busy=lambda: True
    )
    assert await busy.drain_once() == 4 and most[0] == 1  # webhooks first, a small batch
    idle = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(batch_size=6, concurrency=4, **alone))
    assert await idle.drain_once() == 6 and most[0] > 1


async def test_the_process_counts_as_busy_only_while_messages_come_fast(client, world):
    now = [1000.0]
    writer = inbox_module.InboxWriter(client.app[STORE], monotonic=lambda: now[0])
    phone = f"+86139{0:08d}"
    deps = client.app[RUNNER].deps

    async def arrive(i: int) -> None:
        await writer.accept(inbox_module.Arrival(f"SM{i:032x}", deps.vault.lookup_hash(phone), deps.vault.encrypt(phone), "5", deps.clock.now()))

    assert not writer.busy()
    for i in range(5):  # a trickle: 5 in a quarter second is 20 a second
        await arrive(i)
    assert not writer.busy()
    for i in range(5, 30):  # 30 in the same quarter second: 120 a second
        await arrive(i)
    assert writer.busy()
    now[0] += 0.3  # the next window: still busy from the one before
    assert writer.busy()
    now[0] += 0.5  # two windows without arrivals
    assert not writer.busy()
    await writer.close()


async def test_an_opt_out_takes_effect_at_once_even_behind_a_failing_message(client, world, phone, fake_twilio, monkeypatch):
    from gateway.store.models import Citizen
    from gateway.web.keys import DISPATCHER

    await report(client, world)  # a prompt waits in the outbox

    async def always_fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("stuck")

    monkeypatch.setattr(inbox_module, "converse", always_fails)
    await phone.text("5")  # fails, and holds the sender's later messages back
    await phone.text("退订")
    (citizen,) = await _rows(client, Citizen)
    assert citizen.sms_opted_out_at is not None  # recorded by the webhook, not in the message's turn
    await client.app[DISPATCHER].run_once()
    assert fake_twilio.sent == []  # the waiting prompt is suppressed
    (prompt,) = await _rows(client, OutboundMessage)
    assert prompt.status == "suppressed"


async def test_a_message_whose_lease_ran_out_mid_processing_acts_once(client, world, phone, clock):
    await report(client, world)
    await phone.text("5", drain=False)
    slow = client.app[INBOX]
    (message,) = await slow.claim()  # this drainer stalls before processing it
    clock.advance(seconds=61)
    other = InboxDrainer(client.app[RUNNER], policy=InboxPolicy())
    assert await other.drain() == 1
    await slow._process(message)  # the stalled drainer wakes up and tries
    assert await count(client, Evaluation) == 1
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 1


async def test_closing_the_writer_answers_the_requests_still_waiting(client):
    writer = inbox_module.InboxWriter(client.app[STORE])
    started, never = asyncio.Event(), asyncio.Event()

    async def stuck_write(arrivals):  # type: ignore[no-untyped-def]
        started.set()
        await never.wait()

    writer._insert = stuck_write  # type: ignore[method-assign]
    deps = client.app[RUNNER].deps
    arrival = inbox_module.Arrival("SM" + "9" * 32, "h", deps.vault.encrypt("+8613900000000"), "5", deps.clock.now())
    waiting = asyncio.create_task(writer.accept(arrival))
    await started.wait()
    await writer.close()
    with pytest.raises(inbox_module.InboxUnavailable):  # never told its message was stored
        await waiting


async def test_a_set_aside_message_can_be_listed_and_retried(client, world, phone, clock, monkeypatch):
    from gateway.sms.cli import retry, set_aside

    await report(client, world)
    real = inbox_module.converse

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug, since fixed")

    monkeypatch.setattr(inbox_module, "converse", broken)
    await phone.text("2", drain=False)
    for _ in range(7):
        await client.app[INBOX].drain()
        clock.advance(seconds=61)
    store, deps = client.app[STORE], client.app[RUNNER].deps
    assert (await inbox_status(store, deps.clock.now()))["set_aside"] == 1
    (row,) = await set_aside(store, deps)
    assert row["sender"] == "138****1234" and row["text"] == "2" and "RuntimeError" in str(row["error"])

    monkeypatch.setattr(inbox_module, "converse", real)  # the fix is deployed
    await phone.text("帮助", drain=False)
    assert await retry(store, [row["id"]]) == 0  # not while its sender has a message waiting
    assert await client.app[INBOX].drain() == 1
    assert await retry(store, [row["id"]]) == 1
    assert await client.app[INBOX].drain() == 1
    (evaluation,) = await _rows(client, Evaluation)
    assert evaluation.level == 2
    assert (await inbox_status(store, deps.clock.now()))["set_aside"] == 0


async def _until_listening(database_url: str) -> None:
    import asyncpg

    from gateway.sms.inbox import NOTIFY_CHANNEL

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for _ in range(100):
            rows = await conn.fetch(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = $1", f'LISTEN "{NOTIFY_CHANNEL}"'
            )
            if rows:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the worker never started listening")
    finally:
        await conn.close()


async def test_a_worker_on_postgresql_starts_on_a_new_message_at_once(aiohttp_client, pg_database, fake_twilio, clock):
    """A worker polls rarely here (60 s); the webhook's NOTIFY wakes it (PostgreSQL only: on SQLite
    one process does everything and wakes its own drainer)."""
    from gateway.settings import load_settings
    from tests.conftest import _truncate, register_world
    from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
    from tests.gateway.sms.conftest import PUBLIC

    await _truncate(pg_database)
    settings = load_settings(
        database_url=pg_database, public_url=PUBLIC, run_dispatcher=False, sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url, dispatch_interval_seconds=60.0,
    )
    web = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(web.app[STORE], clock)
    await report(web, world)
    worker = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=True))
    await _until_listening(pg_database)  # its first pass is over: it waits for the next poll, a minute away
    await Phone(web).text("4", drain=False)
    for _ in range(50):
        if await count(web, Evaluation):
            break
        await asyncio.sleep(0.1)
    (evaluation,) = await _rows(web, Evaluation)
    assert evaluation.level == 4
    await worker.close()


async def test_a_killed_serve_process_loses_no_reply_it_answered(pg_database, tmp_path):
    """SIGKILL in the middle of a burst: every reply that got its 200 is in the inbox."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import aiohttp
    import asyncpg

    from tests.conftest import _truncate
    from tests.fakes.twilio_api import AUTH_TOKEN, inbound_sms_params, signed_form

    await _truncate(pg_database)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    public = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_DATABASE_URL": pg_database, "GATEWAY_PUBLIC_URL": public,
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "GATEWAY_RUN_DISPATCHER": "false", "GATEWAY_LOG_LEVEL": "WARNING"}
    env.pop("GATEWAY_REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answered: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(f"{public}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("gateway serve did not become ready")

            async def post(i: int) -> None:
                sid = f"SM{i:032x}"
                params = inbound_sms_params(from_=f"+86139{i:08d}", body="5", message_sid=sid)
                headers, data = signed_form(f"{public}/webhooks/twilio/sms", params, AUTH_TOKEN)
                try:
                    async with session.post(f"{public}/webhooks/twilio/sms", data=data, headers=headers) as resp:
                        if resp.status == 200:
                            answered.append(sid)
                except aiohttp.ClientError:
                    pass  # the process is gone: Twilio would try the fallback URL

            async def kill_midway() -> None:
                while len(answered) < 100:
                    await asyncio.sleep(0.001)
                server.send_signal(signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(kill_midway(), *(post(i) for i in range(600))), timeout=60)
    finally:
        server.kill()
        server.wait(timeout=30)
    assert 100 <= len(answered) < 600  # killed in the middle of the burst
    conn = await asyncpg.connect(pg_database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        stored = {r["provider_id"] for r in await conn.fetch("SELECT provider_id FROM inbound_message")}
    finally:
        await conn.close()
    assert set(answered) <= stored


async def test_the_loop_claims_more_while_a_conversation_runs_and_keeps_each_senders_order(client, world, monkeypatch):
    a, b, c = (Phone(client, f"+86139{i:08d}") for i in range(3))
    for i, (sender, body) in enumerate([(a, "A1"), (b, "B1"), (a, "A2"), (c, "C1")]):
        await sender.text(body, drain=False, sid=f"SM{i:032x}")
    real, hold, started = inbox_module.converse, asyncio.Event(), []

    async def a1_waits(runner, *, inbound, **kwargs):  # type: ignore[no-untyped-def]
        started.append(inbound.text)
        if inbound.text == "A1":
            await hold.wait()
        return await real(runner, inbound=inbound, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", a1_waits)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(batch_size=10, group_size=1, concurrency=2))

    async def processed() -> set[str]:  # (a processed message keeps no text: known by its place)
        return {
            body
            for body, m in zip(["A1", "B1", "A2", "C1"], await _rows(client, InboundMessage))
            if m.state == "processed"
        }

    assert await drainer.flow_once() == 2  # A1 and B1 start; A2 waits for A1
    assert await drainer.flow_once() == 0  # no room while both run
    await until(lambda: len(drainer._flowing) == 1, what="B1 to finish")
    assert await drainer.flow_once() == 1  # C1 starts while A1 still runs
    await until(lambda: len(drainer._flowing) == 1, what="C1 to finish")
    assert await drainer.flow_once() == 0  # A2 still waits for A1
    assert await processed() == {"B1", "C1"} and "A2" not in started
    hold.set()
    await until(lambda: "A1" in started and not drainer._flowing, what="A1 to finish")
    assert await drainer.flow_once() == 1
    await until(lambda: not drainer._flowing, what="A2 to finish")
    assert await processed() == {"A1", "A2", "B1", "C1"}
    assert started.index("A1") < started.index("A2")


async def test_stopping_the_loop_lets_the_conversations_in_flight_finish(client, world, monkeypatch):
    await Phone(client, "+8613900000001").text("你好", drain=False)
    real, entered, hold = inbox_module.converse, asyncio.Event(), asyncio.Event()

    async def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        entered.set()
        await hold.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", slow)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=1))
    loop = asyncio.create_task(drainer.run_forever(60))
    await entered.wait()
    loop.cancel()
    await asyncio.sleep(0.05)
    assert not loop.done()  # waiting for the conversation, not cutting it
    hold.set()
    with pytest.raises(asyncio.CancelledError):
        await loop
    (message,) = await _rows(client, InboundMessage)
    assert message.state == "processed"
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 1


async def test_while_webhooks_come_in_the_loop_keeps_one_conversation_in_flight(client, world, monkeypatch):
    for i in range(3):
        await Phone(client, f"+86139{i:08d}").text("你好", drain=False, sid=f"SM{i:032x}")
    real, hold = inbox_module.converse, asyncio.Event()

    async def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        await hold.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", held)
    busy = [True]
    policy = InboxPolicy(batch_size=10, group_size=1, concurrency=4)
    drainer = InboxDrainer(client.app[RUNNER], policy=policy, intake_busy=lambda: busy[0])
    assert await drainer.flow_once() == 1  # webhooks first: one conversation at a time
    assert await drainer.flow_once() == 0  # no room while the first runs
    busy[0] = False
    assert await drainer.flow_once() == 2  # the burst is over: the rest side by side
    hold.set()
    await until(lambda: not drainer._flowing, what="the conversations to finish")
    assert {m.state for m in await _rows(client, InboundMessage)} == {"processed"}


async def test_a_stopping_loop_claims_nothing_more(client, world, monkeypatch):
    for i in range(2):
        await Phone(client, f"+86139{i:08d}").text("你好", drain=False, sid=f"SM{i:032x}")
    real, entered, hold = inbox_module.converse, asyncio.Event(), asyncio.Event()

    async def first_waits(*args, **kwargs):  # type: ignore[no-untyped-def]
        entered.set()
        await hold.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "converse", first_waits)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=1, concurrency=1))
    loop = asyncio.create_task(drainer.run_forever(60))
    await entered.wait()  # the first message runs; the second waits for room
    await asyncio.sleep(0.05)
    loop.cancel()
    await asyncio.sleep(0.05)
    hold.set()
    with pytest.raises(asyncio.CancelledError):
        await loop
    first, second = await _rows(client, InboundMessage)
    assert first.state == "processed"
    assert (second.state, second.attempts, second.lease_until) == ("pending", 0, None)  # left for the next start
