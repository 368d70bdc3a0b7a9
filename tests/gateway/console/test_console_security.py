"""Bad input and safety: every refusal is a clear Chinese page with a 4xx, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import func, select

from gateway.app import create_app
from gateway.console.models import ConsoleAudit
from gateway.store.models import ContactAccess, Ticket
from gateway.web.keys import STORE
from tests.gateway.console.conftest import PASSWORD, Browser, add_people, make_ticket
from tests.gateway.tickets.helpers import Api


async def _ticket(client: Any, ticket_id: int) -> Ticket:
    async with client.app[STORE].transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def _audit(client: Any, kind: str) -> int:
    async with client.app[STORE].transaction() as session:
        return int(
            (await session.exec(select(func.count()).select_from(ConsoleAudit).where(ConsoleAudit.kind == kind))).one()
        )


def _assert_headers(resp: Any) -> None:
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_wrong_password_unknown_name_and_disabled_account(client, people, browser: Browser, new_browser):  # type: ignore[no-untyped-def]
    status, html = await browser.sign_in("hb.clerk", "not the password")
    assert status == 401 and "登录名或密码不正确" in html
    status, html = await browser.sign_in("nobody.here", "not the password")
    assert status == 401 and "登录名或密码不正确" in html
    assert await _audit(client, "sign_in_failed") == 2
    resp = await client.get("/console/tickets", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/console/signin")

    admin = await new_browser()
    await admin.sign_in("ops.admin")
    status, html = await browser.sign_in("hb.clerk")
    assert status == 200 and "差评工单" in html  # signed in
    status, _ = await admin.post("/console/admin/users/disable", {"login": "hb.clerk"})
    assert status == 200
    resp = await client.get("/console/tickets", allow_redirects=False)
    assert resp.status == 303  # the disabled person's session ended
    status, html = await browser.sign_in("hb.clerk")
    assert status == 403 and "已停用" in html


async def test_sign_in_is_throttled_per_account(client, people, browser: Browser):  # type: ignore[no-untyped-def]
    for _ in range(5):
        status, _ = await browser.sign_in("hb.clerk", "guess")
        assert status == 401
    status, html = await browser.sign_in("hb.clerk")  # even the right password waits
    assert status == 429 and "次数过多" in html
    status, html = await browser.sign_in("hb.chief")  # another account from the same address is not blocked yet
    assert status == 200
    assert await _audit(client, "sign_in_throttled") == 1


async def test_throttle_and_sessions_on_redis(settings, clock, redis_url, aiohttp_client):  # type: ignore[no-untyped-def]
    app = create_app(
        settings.model_copy(update={"redis_url": redis_url}), clock=clock, migrate=False, run_background=False
    )
    client = await aiohttp_client(app)
    from tests.conftest import register_world

    await register_world(client.app[STORE], clock)
    await add_people(client.app[STORE], clock.now())
    browser = Browser(client)
    for _ in range(5):
        assert (await browser.sign_in("hb.clerk", "guess"))[0] == 401
    assert (await browser.sign_in("hb.clerk"))[0] == 429
    other = browser
    status, html = await other.sign_in("hb.chief")
    assert status == 200 and "差评工单" in html
    clock.advance(minutes=31)  # idle expiry also holds on Redis
    resp = await client.get("/console/tickets", allow_redirects=False)
    assert resp.status == 303


async def test_expired_session_and_sign_out(client, people, browser: Browser, clock):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-1")
    await browser.sign_in("hb.clerk")
    status, html = await browser.get(f"/console/tickets/{tid}")
    assert status == 200
    clock.advance(minutes=31)
    status, html = await browser.post(
        f"/console/tickets/{tid}/actions", {"action": "transfer", "expected_version": "1"}
    )
    assert status == 401 and "重新登录" in html
    assert (await _ticket(client, tid)).status == "dispatching"
    status, html = await browser.get("/console/tickets")
    assert "登录已超时" in html

    await browser.sign_in("hb.clerk")
    await browser.get("/console/tickets")
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/console/"))["gw_console"].value
    status, _ = await browser.post("/console/signout", {})
    assert status == 200
    resp = await client.get("/console/tickets", cookies={"gw_console": cookie}, allow_redirects=False)
    assert resp.status == 303  # the old cookie opens nothing
    assert await _audit(client, "sign_out") == 1


async def test_csrf_missing_or_wrong_changes_nothing(client, people, browser: Browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-2")
    await browser.sign_in("hb.clerk")
    await browser.get(f"/console/tickets/{tid}")
    status, html = await browser.post(f"/console/tickets/{tid}/actions", {"action": "transfer"}, csrf=False)
    assert status == 403 and "安全校验未通过" in html
    status, html = await browser.post(
        f"/console/tickets/{tid}/actions", [("action", "transfer"), ("csrf_token", "forged")], csrf=False
    )
    assert status == 403
    ticket = await _ticket(client, tid)
    assert ticket.status == "dispatching" and ticket.version == 1
    # The sign-in form has its own pair (cookie and field).
    resp = await client.post("/console/signin", data={"login": "hb.clerk", "password": PASSWORD, "csrf_token": "x"})
    assert resp.status == 403


async def test_refusals_are_chinese_and_change_nothing(client, people, new_browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-3")
    county, other = Browser(client), await new_browser()
    await county.sign_in("hb.clerk")
    await county.get(f"/console/tickets/{tid}")
    # A second clerk of the same department transfers first.
    await other.sign_in("hb.chief")
    await other.get(f"/console/tickets/{tid}")
    status, _ = await other.post(
        f"/console/tickets/{tid}/actions", {"action": "transfer", "unit": "hanbin-market", "expected_version": "1"}
    )
    assert status == 200
    status, html = await county.post(
        f"/console/tickets/{tid}/actions", {"action": "consult", "orgs": "hanbin-tax", "expected_version": "1"}
    )
    assert status == 409 and "刷新页面" in html
    # An action the county may not take (the unit accepts): a 403 in Chinese, next to no form of it.
    status, html = await county.post(f"/console/tickets/{tid}/actions", {"action": "accept", "expected_version": "2"})
    assert status == 403 and "签收未执行：只有承接本工单的承办单位可以签收" in html
    # A missing required field names it in Chinese.
    status, html = await county.post(f"/console/tickets/{tid}/actions", {"action": "redo", "expected_version": "2"})
    assert status == 422 and "请填写「理由」" in html
    status, html = await county.post(f"/console/tickets/{tid}/actions", {"action": "launch_missiles"})
    assert status == 422 and "未知的操作" in html
    ticket = await _ticket(client, tid)
    assert ticket.status == "transferred" and ticket.version == 2 and not ticket.consultation


async def test_forged_and_foreign_ticket_ids_get_the_same_not_found_page(client, people):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-4")
    other = Browser(client)
    await other.sign_in("hy.clerk")
    resp = await client.get(f"/console/tickets/{tid}")
    foreign = await resp.text()
    assert resp.status == 404
    _assert_headers(resp)
    for path in ("/console/tickets/987654", "/console/tickets/99999999999"):
        resp = await client.get(path)
        assert resp.status == 404 and await resp.text() == foreign
    assert "工单不存在，或不在您的管辖范围内" in foreign and "Traceback" not in foreign
    status, html = await other.post(f"/console/tickets/{tid}/actions", {"action": "transfer"})
    assert status == 404 and "工单不存在" in html
    status, html = await other.post(f"/console/tickets/{tid}/contact", {})
    assert status == 404


async def test_html_is_escaped_and_headers_are_set(client, people, browser: Browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-5", text='<img src=x onerror="alert(1)"><script>alert(2)</script>')
    await browser.sign_in("hb.clerk")
    status, html = await browser.get(f"/console/tickets/{tid}")
    assert status == 200
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    # A note with HTML is stored as given and shown as text.
    await browser.post(
        f"/console/tickets/{tid}/actions", {"action": "transfer", "note": "<b>急</b>", "expected_version": "1"}
    )
    status, html = await browser.get(f"/console/tickets/{tid}")
    assert "&lt;b&gt;急&lt;/b&gt;" in html and "<b>急</b>" not in html
    for path in (
        "/console/tickets",
        f"/console/tickets/{tid}",
        "/console/stats",
        "/console/campaigns",
        "/console/signin",
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        _assert_headers(resp)
    resp = await client.get("/console/static/console.css")
    assert resp.status == 200 and "Cache-Control" not in resp.headers


async def test_number_reveal_is_for_the_unit_and_logged(client, people, new_browser):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-6")
    api = Api(client, people)
    await api.in_progress(tid)
    county, unit = Browser(client), await new_browser()
    await county.sign_in("hb.clerk")
    await county.get(f"/console/tickets/{tid}")
    status, html = await county.post(f"/console/tickets/{tid}/contact", {})
    assert status == 403 and "只向承办单位提供" in html and "13812341234" not in html
    await unit.sign_in("market.clerk")
    status, html = await unit.get(f"/console/tickets/{tid}")
    assert "138****1234" in html and "13812341234" not in html
    status, html = await unit.post(f"/console/tickets/{tid}/contact", {})
    assert status == 200 and "+8613812341234" in html
    async with client.app[STORE].transaction() as session:
        assert len((await session.exec(select(ContactAccess).where(ContactAccess.ticket_id == tid))).all()) == 1
    assert await _audit(client, "number_reveal") == 1


async def test_resolve_reply_too_long_for_sms(client, people):  # type: ignore[no-untyped-def]
    tid = await make_ticket(client, people, "X-7")
    await Api(client, people).in_progress(tid)
    unit = Browser(client)
    await unit.sign_in("market.clerk")
    await unit.get(f"/console/tickets/{tid}")
    resp = await client.get(f"/console/tickets/{tid}/reply-length", params={"reply": "好" * 200})
    assert "已超出" in await resp.text()
    status, html = await unit.post(
        f"/console/tickets/{tid}/actions",
        {"action": "resolve", "rectification": "已整改", "reply": "好" * 200, "expected_version": "3"},
    )
    assert status == 422 and "两条短信" in html
    assert (await _ticket(client, tid)).status == "in_progress"
    resp = await client.get(f"/console/tickets/{tid}/reply-length", params={"reply": "已整改"})
    assert "还可输入" in await resp.text()


@pytest.mark.parametrize("path", ["/console/admin/users", "/console/admin/orgs"])
async def test_operator_pages_are_the_admins_only(client, people, path: str):  # type: ignore[no-untyped-def]
    clerk = Browser(client)
    await clerk.sign_in("hb.chief")
    status, _ = await clerk.get(path)
    assert status == 404
    status, _ = await clerk.post(path, {"login": "x.y", "org": "hanbin", "role": "clerk"})
    assert status == 404
