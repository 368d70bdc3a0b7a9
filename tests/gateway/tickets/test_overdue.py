"""Overdue tickets (Art. 16(一)): flagged in their history, listed, and their holders reminded once per working
day through the configured webhook (a recording fake on loopback here) or the log."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import load_settings
from gateway.store.models import Ticket
from sqlmodel import select

from gateway.store.models import OutboundMessage
from gateway.tickets.overdue import sweep
from gateway.web.keys import DEPS, DISPATCHER, PROVIDERS, STORE, TASKS
from tests.conftest import case_payload, register_world
from tests.gateway.tickets.helpers import Api

CST = timezone(timedelta(hours=8))


class FakeWebhook:
    """A loopback receiver that records every reminder and can be told to fail."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.keys: list[str] = []  # the Idempotency-Key of every request that was taken
        self.fail = False
        self.fail_status = 503
        self.refused = 0
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.server = TestServer(app, host="127.0.0.1")

    async def _hook(self, request: web.Request) -> web.Response:
        if self.fail:
            self.refused += 1
            return web.Response(status=self.fail_status)
        self.received.append(await request.json())
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    def for_org(self, code: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["org"]["code"] == code]


@pytest.fixture
async def webhook():  # type: ignore[no-untyped-def]
    fake = FakeWebhook()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
def settings(database_url: str, webhook: FakeWebhook):  # type: ignore[no-untyped-def]
    """The department webhook configured: reminders are queued in the outbox for it."""
    return load_settings(database_url=database_url, public_url="http://gateway.test", run_dispatcher=False,
                         overdue_reminder_webhook=webhook.url)


async def run_sweep(client) -> int:  # type: ignore[no-untyped-def]
    """One sweep, then the dispatcher delivers what it queued (as the background loops do)."""
    reminded = await sweep(client.app[STORE], client.app[DEPS], via="webhook")
    await client.app[DISPATCHER].run_once()
    return reminded


async def reminders_in_outbox(client) -> list[OutboundMessage]:  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(OutboundMessage).where(OutboundMessage.channel == "webhook"))).all())


async def test_overdue_tickets_are_flagged_and_their_holders_reminded_once_a_working_day(
    api: Api, make_ticket, client, clock, webhook: FakeWebhook  # type: ignore[no-untyped-def]
) -> None:
    at_unit, at_department, finished = await make_ticket(), await make_ticket(), await make_ticket()
    await api.in_progress(at_unit)
    await api.resolved(finished)
    due = datetime.fromisoformat((await api.ticket("hanbin", at_unit))["due_at"])  # 2026-03-18 24:00

    clock.set(due - timedelta(microseconds=1))
    assert await run_sweep(client) == 0 and webhook.received == []

    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))  # Thursday
    assert await run_sweep(client) == 2
    [to_unit] = webhook.for_org("hanbin-market")
    [to_department] = webhook.for_org("hanbin")
    assert to_unit["kind"] == "overdue_tickets" and to_unit["day"] == "2026-03-19"
    assert [t["id"] for t in to_unit["tickets"]] == [at_unit]
    assert to_unit["tickets"][0]["due_local"] == "2026-03-18 24:00 Asia/Shanghai"
    assert to_unit["tickets"][0]["unit"] == "hanbin-market"
    assert [t["id"] for t in to_department["tickets"]] == [at_department]
    assert "13812341234" not in str(webhook.received)
    assert len(set(webhook.keys)) == 2  # an idempotency key per reminder

    ticket = await api.ticket("hanbin", at_unit)
    assert ticket["overdue"] is True and ticket["overdue_since"] == ticket["due_at"]
    assert [e["action"] for e in ticket["events"][-2:]] == ["overdue", "overdue_reminder"]
    assert ticket["events"][-1]["actor"] == "system:overdue"
    assert ticket["events"][-1]["data"] == {"org": "hanbin-market", "channel": "webhook", "day": "2026-03-19"}
    _, page = await api.list("hanbin", overdue="true")
    assert sorted(i["id"] for i in page["items"]) == sorted([at_unit, at_department])

    clock.set(datetime(2026, 3, 19, 17, tzinfo=CST))
    assert await run_sweep(client) == 0  # once per day
    clock.set(datetime(2026, 3, 21, 10, tzinfo=CST))
    assert await run_sweep(client) == 0  # Saturday: no reminders
    clock.set(datetime(2026, 3, 23, 8, tzinfo=CST))
    assert await run_sweep(client) == 2  # Monday
    assert len(webhook.received) == 4  # each sent once
    assert {m.status for m in await reminders_in_outbox(client)} == {"delivered"}
    events = (await api.ticket("hanbin", at_unit))["events"]
    assert [e["action"] for e in events].count("overdue") == 1
    assert [e["action"] for e in events].count("overdue_reminder") == 2
    assert all(r["tickets"][0]["id"] != finished for r in webhook.received)


async def test_a_failing_webhook_is_retried_until_it_takes_the_reminder(
    api: Api, make_ticket, client, clock, webhook: FakeWebhook  # type: ignore[no-untyped-def]
) -> None:
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    webhook.fail = True
    assert await run_sweep(client) == 1  # claimed and queued in one transaction
    assert webhook.received == [] and webhook.refused == 1
    [message] = await reminders_in_outbox(client)
    assert message.status == "queued" and message.attempts == 1 and message.error_code == "503"
    clock.advance(minutes=5)
    assert await run_sweep(client) == 0  # the day's claim stands: no second reminder is queued ...
    assert webhook.refused == 2  # ... and the queued one was tried again
    webhook.fail = False
    clock.advance(minutes=5)
    assert await run_sweep(client) == 0
    assert [r["tickets"][0]["id"] for r in webhook.received] == [ticket_id]
    assert len(set(webhook.keys)) == 1  # the same reminder each time
    clock.advance(minutes=5)
    await run_sweep(client)
    assert len(webhook.received) == 1  # delivered once
    [message] = await reminders_in_outbox(client)
    assert message.status == "delivered" and message.attempts == 3


async def test_an_unreachable_webhook_is_a_failure_too(api: Api, make_ticket, client, clock) -> None:  # type: ignore[no-untyped-def]
    await make_ticket()
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    client.app[PROVIDERS]["webhook"].url = "http://127.0.0.1:9/hook"
    assert await run_sweep(client) == 1
    [message] = await reminders_in_outbox(client)
    assert message.status == "queued" and "unreachable" in (message.last_error or "")


async def test_a_request_the_webhook_refuses_for_good_stays_visible(
    api: Api, make_ticket, client, clock, webhook: FakeWebhook  # type: ignore[no-untyped-def]
) -> None:
    await make_ticket()
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    webhook.fail_status = 400
    webhook.fail = True
    assert await run_sweep(client) == 1
    [message] = await reminders_in_outbox(client)
    assert message.status == "failed" and message.error_code == "400"
    text = await (await client.get("/metrics")).text()
    assert 'gateway_outbox_messages{channel="webhook",status="failed"} 1.0' in text


async def test_without_a_webhook_reminders_go_to_the_log(api: Api, make_ticket, client, clock, caplog) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    with caplog.at_level(logging.WARNING, logger="gateway.tickets.overdue"):
        assert await sweep(client.app[STORE], client.app[DEPS], via="log") == 1
    assert f"overdue tickets: hanbin holds 1 ({ticket_id})" in caplog.text
    assert await reminders_in_outbox(client) == []


async def test_a_new_period_clears_the_overdue_flag(api: Api, make_ticket, client, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    await run_sweep(client)
    assert (await api.ticket("hanbin", ticket_id))["overdue_since"] is not None
    ticket = await api.ok("hanbin", ticket_id, "transfer", unit="hanbin-tax")  # re-routed: the new unit's clock
    assert ticket["overdue"] is False and ticket["overdue_since"] is None
    assert ticket["due_local"] == "2026-04-02 24:00 Asia/Shanghai"
    assert "overdue" in [e["action"] for e in ticket["events"]]  # the history keeps it


async def test_the_app_runs_the_sweep_in_the_background(database_url, clock, aiohttp_client, webhook: FakeWebhook) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        database_url=database_url, public_url="http://gateway.test", run_dispatcher=False,
        overdue_reminder_webhook=webhook.url, overdue_sweep_interval_seconds=0.05, dispatch_interval_seconds=0.05,
    )
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=True))
    assert "overdue-sweep" in {t.get_name() for t in client.app[TASKS]}
    world = await register_world(client.app[STORE], clock)
    resp = await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))
    token = (await resp.json())["invitation"]["token"]
    resp = await client.post(f"/r/{token}", json={"level": 1, "reasons": [115]})
    ticket_id = (await resp.json())["ticket_id"]
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    for _ in range(200):
        if webhook.received:
            break
        await asyncio.sleep(0.05)
    assert [r["tickets"][0]["id"] for r in webhook.received] == [ticket_id]
