"""Overdue tickets (Art. 16(一)): flagged in their history, listed, and their holders reminded once per working
day through the configured webhook (a recording fake on loopback here) or the log."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import load_settings
from gateway.store.models import Ticket
from gateway.tickets.overdue import LogNotifier, sweep
from gateway.wiring.reminders import WebhookNotifier
from gateway.web.keys import DEPS, STORE, TASKS
from tests.conftest import case_payload, register_world
from tests.gateway.tickets.helpers import Api

CST = timezone(timedelta(hours=8))


class FakeWebhook:
    """A loopback receiver that records every reminder and can be told to fail."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail = False
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.server = TestServer(app, host="127.0.0.1")

    async def _hook(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=503)
        self.received.append(await request.json())
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
async def notifier(webhook: FakeWebhook):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield WebhookNotifier(session, webhook.url)


async def run_sweep(client, notifier) -> int:  # type: ignore[no-untyped-def]
    return await sweep(client.app[STORE], client.app[DEPS], notifier)


async def test_overdue_tickets_are_flagged_and_their_holders_reminded_once_a_working_day(
    api: Api, make_ticket, client, clock, webhook: FakeWebhook, notifier  # type: ignore[no-untyped-def]
) -> None:
    at_unit, at_department, finished = await make_ticket(), await make_ticket(), await make_ticket()
    await api.in_progress(at_unit)
    await api.resolved(finished)
    due = datetime.fromisoformat((await api.ticket("hanbin", at_unit))["due_at"])  # 2026-03-18 24:00

    clock.set(due - timedelta(microseconds=1))
    assert await run_sweep(client, notifier) == 0 and webhook.received == []

    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))  # Thursday
    assert await run_sweep(client, notifier) == 2
    [to_unit] = webhook.for_org("hanbin-market")
    [to_department] = webhook.for_org("hanbin")
    assert to_unit["kind"] == "overdue_tickets" and to_unit["day"] == "2026-03-19"
    assert [t["id"] for t in to_unit["tickets"]] == [at_unit]
    assert to_unit["tickets"][0]["due_local"] == "2026-03-18 24:00 Asia/Shanghai"
    assert to_unit["tickets"][0]["unit"] == "hanbin-market"
    assert [t["id"] for t in to_department["tickets"]] == [at_department]
    assert "13812341234" not in str(webhook.received)

    ticket = await api.ticket("hanbin", at_unit)
    assert ticket["overdue"] is True and ticket["overdue_since"] == ticket["due_at"]
    assert [e["action"] for e in ticket["events"][-2:]] == ["overdue", "overdue_reminder"]
    assert ticket["events"][-1]["actor"] == "system:overdue"
    assert ticket["events"][-1]["data"] == {"org": "hanbin-market", "channel": "webhook", "day": "2026-03-19"}
    _, page = await api.list("hanbin", overdue="true")
    assert sorted(i["id"] for i in page["items"]) == sorted([at_unit, at_department])

    clock.set(datetime(2026, 3, 19, 17, tzinfo=CST))
    assert await run_sweep(client, notifier) == 0  # once per day
    clock.set(datetime(2026, 3, 21, 10, tzinfo=CST))
    assert await run_sweep(client, notifier) == 0  # Saturday: no reminders
    clock.set(datetime(2026, 3, 23, 8, tzinfo=CST))
    assert await run_sweep(client, notifier) == 2  # Monday
    assert len(webhook.received) == 4
    events = (await api.ticket("hanbin", at_unit))["events"]
    assert [e["action"] for e in events].count("overdue") == 1
    assert [e["action"] for e in events].count("overdue_reminder") == 2
    assert all(r["tickets"][0]["id"] != finished for r in webhook.received)


async def test_a_failed_reminder_is_retried_on_the_next_pass(
    api: Api, make_ticket, client, clock, webhook: FakeWebhook, notifier, caplog  # type: ignore[no-untyped-def]
) -> None:
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    webhook.fail = True
    with caplog.at_level(logging.WARNING, logger="gateway.tickets.overdue"):
        assert await run_sweep(client, notifier) == 0
    assert "retrying on the next pass" in caplog.text and "503" in caplog.text
    async with client.app[STORE].transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.last_reminded_on is None and ticket.overdue_since is not None
    webhook.fail = False
    clock.advance(minutes=5)
    assert await run_sweep(client, notifier) == 1
    assert [r["tickets"][0]["id"] for r in webhook.received] == [ticket_id]


async def test_an_unreachable_webhook_is_a_failure_too(api: Api, make_ticket, client, clock) -> None:  # type: ignore[no-untyped-def]
    await make_ticket()
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        assert await run_sweep(client, WebhookNotifier(session, "http://127.0.0.1:9/hook")) == 0
    assert await run_sweep(client, LogNotifier()) == 1


async def test_without_a_webhook_reminders_go_to_the_log(api: Api, make_ticket, client, clock, caplog) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    with caplog.at_level(logging.WARNING, logger="gateway.tickets.overdue"):
        assert await run_sweep(client, LogNotifier()) == 1
    assert f"overdue tickets: hanbin holds 1 ({ticket_id})" in caplog.text


async def test_a_new_period_clears_the_overdue_flag(api: Api, make_ticket, client, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    clock.set(datetime(2026, 3, 19, 9, tzinfo=CST))
    await run_sweep(client, LogNotifier())
    assert (await api.ticket("hanbin", ticket_id))["overdue_since"] is not None
    ticket = await api.ok("hanbin", ticket_id, "transfer", unit="hanbin-tax")  # re-routed: the new unit's clock
    assert ticket["overdue"] is False and ticket["overdue_since"] is None
    assert ticket["due_local"] == "2026-04-02 24:00 Asia/Shanghai"
    assert "overdue" in [e["action"] for e in ticket["events"]]  # the history keeps it


async def test_the_app_runs_the_sweep_in_the_background(database_url, clock, aiohttp_client, webhook: FakeWebhook) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        database_url=database_url, public_url="http://gateway.test", run_dispatcher=False,
        overdue_reminder_webhook=webhook.url, overdue_sweep_interval_seconds=0.05,
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
