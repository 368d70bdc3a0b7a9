"""The inbox's order and filters, and campaigns started, paused, resumed and cancelled in the console."""

from __future__ import annotations

import re

from sqlmodel import select

from gateway.store.models import Campaign
from gateway.web.keys import STORE
from tests.gateway.console.conftest import Browser, make_ticket
from tests.gateway.tickets.helpers import Api


async def test_inbox_puts_overdue_first_and_counts_working_days(client, people, clock):  # type: ignore[no-untyped-def]
    first = await make_ticket(client, people, "P-1")
    clock.advance(days=21)
    second = await make_ticket(client, people, "P-2")  # newer, not overdue
    browser = Browser(client)
    await browser.sign_in("hb.clerk")
    status, html = await browser.get("/console/tickets")
    assert status == 200
    ids = [int(i) for i in re.findall(r'<td><a href="/console/tickets/(\d+)">#', html)]
    assert ids == [first, second]
    assert "已超期" in html and 'class="overdue"' in html
    status, html = await browser.get("/console/tickets", params={"overdue": "false"})
    assert re.findall(r'<td><a href="/console/tickets/(\d+)">#', html) == [str(second)]
    status, html = await browser.get("/console/tickets", params={"region": "61"})
    assert status == 422 and "格式不正确" in html
    status, html = await browser.get("/console/tickets", params={"unit": "nobody"})
    assert status == 422 and "未登记" in html


async def test_campaign_start_pause_resume_cancel(client, people, new_browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "P-3")
    await Api(client, people).resolved(tid)
    county = Browser(client)
    await county.sign_in("hb.clerk")
    status, html = await county.get("/console/campaigns")
    assert f'name="ticket_ids" value="{tid}" checked' in html
    status, html = await county.post("/console/campaigns", {"name": "<i>三月</i>"})
    assert status == 422 and "请至少勾选" in html
    status, html = await county.post("/console/campaigns", [("name", "<i>三月</i>"), ("ticket_ids", str(tid))])
    assert status == 200 and "&lt;i&gt;三月&lt;/i&gt;" in html and 'id="n-targets">1<' in html
    assert 'hx-trigger="every 2s"' in html
    async with client.app[STORE].transaction() as session:
        campaign_id = (await session.exec(select(Campaign.id))).one()
    status, html = await county.post(f"/console/campaigns/{campaign_id}/pause", {})
    assert status == 200 and "已暂停" in html
    status, html = await county.post(f"/console/campaigns/{campaign_id}/pause", {})
    assert status == 409 and "不能暂停" in html
    status, html = await county.post(f"/console/campaigns/{campaign_id}/resume", {})
    assert status == 200 and "进行中" in html
    status, html = await county.post(f"/console/campaigns/{campaign_id}/cancel", {})
    assert status == 200 and "已取消" in html
    resp = await client.get(f"/console/campaigns/{campaign_id}/progress")
    fragment = await resp.text()
    assert "已取消" in fragment and "hx-trigger" not in fragment  # polling stops once it is over

    unit = await new_browser()
    await unit.sign_in("market.clerk")
    status, html = await unit.get("/console/campaigns")
    assert status == 403 and "审批部门" in html
    status, html = await unit.get(f"/console/campaigns/{campaign_id}")
    assert status == 404
