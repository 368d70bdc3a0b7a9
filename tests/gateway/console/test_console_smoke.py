from __future__ import annotations

from tests.gateway.console.conftest import Browser, make_ticket


async def test_smoke(client, people, browser: Browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "S-1", text="<script>alert(1)</script>")
    status, html = await browser.sign_in("hb.clerk")
    assert status == 200, html
    status, html = await browser.get("/console/tickets")
    assert status == 200 and f"#{tid}" in html, html
    status, html = await browser.get(f"/console/tickets/{tid}")
    assert status == 200, html
    print(html)
    status, html = await browser.post(
        f"/console/tickets/{tid}/actions", {"action": "transfer", "unit": "hanbin-market", "expected_version": "1"}
    )
    assert status == 200 and "已转办" in html, html


async def test_campaign_pages(client, people, browser: Browser):  # type: ignore[no-untyped-def]
    from tests.gateway.tickets.helpers import Api

    tid = await make_ticket(client, people, "S-2")
    await Api(client, people).resolved(tid)
    await browser.sign_in("hb.clerk")
    status, html = await browser.get("/console/campaigns")
    assert status == 200, html
