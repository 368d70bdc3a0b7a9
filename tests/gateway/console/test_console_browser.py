"""The console in a real browser (Debian's Chromium through Playwright) against a real `gateway serve`.

Seeded the way a newcomer does it (`gateway org add`, `gateway user add`, the one-time link), then the
closed loop: the county transfers, the unit accepts and resolves, the county starts a callback campaign
and watches it move; a clerk of another county gets the same "not found" page as for a missing ticket.
Screenshots of each main page go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
PASSWORD = "county clerk pass 1"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"Chromium is required under CI but unavailable: {why}")
    pytest.skip(f"browser tests need Chromium ({why}); install Debian's chromium to run them")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser for the module (contexts per person are cheap)."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_", "TELEGRAM_"))},
            "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'console.db'}",
            "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_QUIET_HOURS": "",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_DISPATCH_INTERVAL_SECONDS": "0.2",
            "GATEWAY_CAMPAIGN_FEED_INTERVAL_SECONDS": "0.2",
        }
        self.cwd = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""
                time.sleep(0.1)
        raise AssertionError("gateway serve did not answer /healthz")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def api(self, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return dict(json.loads(resp.read()))


async def _flag_all(url: str) -> int:
    """A fraud flag over every evaluation so far, as the detector would leave one."""
    from datetime import datetime, timezone

    from sqlmodel import select

    from gateway.fraud.models import FlagEvaluation
    from gateway.store.db import Store
    from gateway.store.models import Evaluation, FraudFlag

    store = Store.connect(url)
    async with store.transaction() as session:
        ids = list((await session.exec(select(Evaluation.id))).all())
        flag = FraudFlag(rule="burst", subject="citizen 1", region_code="610902", evidence={"count": len(ids)},
                         evaluation_count=len(ids), created_at=datetime.now(timezone.utc))
        session.add(flag)
        await session.flush()
        for eid in ids:
            session.add(FlagEvaluation(flag_id=flag.id, evaluation_id=eid, rule="burst"))  # type: ignore[arg-type]
        flag_id = int(flag.id)  # type: ignore[arg-type]
    await store.close()
    return flag_id


async def _seed(url: str, public_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Organisations and two accounts, written straight to the server's database before it starts."""
    from datetime import datetime, timezone

    from gateway.console.accounts import add_user, setup_link
    from gateway.orgs import add_org, issue_key
    from gateway.store.db import Store
    from gateway.store.migrate import upgrade

    store = Store.connect(url)
    await upgrade(store.engine)
    keys, links = {}, {}
    at = datetime.now(timezone.utc)
    async with store.transaction() as session:
        for code, name, kind, region, parent in [
            ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", None),
            ("hanyin", "汉阴县行政审批服务局", "county_dept", "610921", None),
            ("hanbin-market", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
        ]:
            org = await add_org(session, code=code, name=name, kind=kind, region_code=region, parent_code=parent, at=at)
            keys[code] = await issue_key(session, org=org, label="test", at=at)
        for login, org_code in (("market.clerk", "hanbin-market"), ("hy.clerk", "hanyin")):
            _, token = await add_user(session, org_code=org_code, login=login, role="clerk", at=at)
            links[login] = setup_link(public_url, token)
    await store.close()
    return keys, links


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, chromium: Any) -> Iterator[Server]:
    import asyncio

    srv = Server(tmp_path_factory.mktemp("console-browser"))
    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        keys, links = pool.submit(asyncio.run, _seed(srv.env["GATEWAY_DATABASE_URL"], srv.url)).result()
    # The county clerk is added as a newcomer would, with the command line.
    out = srv.cli("user", "add", "--org", "hanbin", "--name", "hb.clerk", "--role", "clerk")
    assert "one-time sign-in link" in out
    links["hb.clerk"] = out.strip().splitlines()[-1]
    srv.keys, srv.links = keys, links  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _person(chromium: Any, server: Server, login: str, *, tablet: bool = False) -> Any:
    """A fresh browser context for one person: set the password from the one-time link, then sign in."""
    context = chromium.new_context(
        viewport={"width": 820, "height": 1180} if tablet else {"width": 1366, "height": 900}, locale="zh-CN"
    )
    page = context.new_page()
    page.goto(server.links[login])  # type: ignore[attr-defined]
    page.get_by_label("新密码", exact=True).fill(PASSWORD)
    page.get_by_label("再次输入新密码").fill(PASSWORD)
    page.get_by_role("button", name="设置密码").click()
    page.get_by_label("登录名").fill(login)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url("**/console/tickets")
    return page


def _report_bad_review(server: Server, case_no: str, text: str) -> int:
    key = server.keys["hanbin-market"]  # type: ignore[attr-defined]
    case = server.api(
        "POST",
        "/api/v1/cases",
        key,
        {
            "case_no": case_no,
            "item_code": "11610902MB0001",
            "item_name": "个体工商户设立登记",
            "org_code": "hanbin-market",
            "region_code": "610902",
            "service_channel": "window",
            "staff_id": "HB-017",
            "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 600)),
            "citizen": {"phone": "13812341234"},
        },
    )
    request = urllib.request.Request(
        f"{server.url}/r/{case['invitation']['token']}",
        method="POST",
        data=json.dumps({"level": 2, "reasons": [213], "text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.loads(resp.read())["ticket_id"])


def test_closed_loop_in_the_browser(chromium: Any, server: Server) -> None:
    from playwright.sync_api import expect

    ticket = _report_bad_review(server, "HB-B-0001", "<b>窗口</b>人员不熟悉业务<script>alert(1)</script>")
    county = _person(chromium, server, "hb.clerk")
    expect(county.get_by_role("link", name=f"#{ticket}")).to_be_visible()
    _shot(county, "inbox")

    county.get_by_role("link", name=f"#{ticket}").click()
    expect(county.get_by_text("<b>窗口</b>人员不熟悉业务<script>alert(1)</script>")).to_be_visible()  # shown as text
    expect(county.get_by_label("承办单位", exact=True)).to_have_value(
        "hanbin-market"
    )  # the proposed unit is preselected
    assert county.locator("form[action$='/actions'] input[name=action]").evaluate_all(
        "els => els.map(e => e.value)"
    ) == ["transfer", "consult"]
    _shot(county, "ticket-dispatching")
    county.get_by_role("button", name="转办").click()
    expect(county.get_by_role("status")).to_contain_text("已转办")

    unit = _person(chromium, server, "market.clerk", tablet=True)
    unit.goto(f"{server.url}/console/tickets/{ticket}")
    unit.get_by_role("button", name="签收").click()
    expect(unit.get_by_role("status")).to_contain_text("已签收")
    unit.get_by_label("办理类型", exact=True).select_option("general")
    unit.get_by_role("button", name="定性").click()
    unit.get_by_role("button", name="查看完整号码（将被记录）").click()
    expect(unit.locator("#revealed-number")).to_have_text("+8613812341234")
    unit.goto(f"{server.url}/console/tickets/{ticket}")
    expect(unit.locator("#revealed-number")).to_have_count(0)  # shown once: the page itself never carries it
    unit.get_by_label("整改情况").fill("已对窗口人员开展业务培训。")
    unit.get_by_label("给评价人的答复").press_sequentially("已培训窗口人员，感谢监督")
    expect(unit.locator("#reply-length")).to_contain_text("还可输入")
    left = unit.locator("#reply-length").inner_text()
    _shot(unit, "ticket-resolve-tablet")
    unit.get_by_role("button", name="办结答复").click()
    expect(unit.get_by_role("status")).to_contain_text("已办结答复")
    assert "还可输入" in left

    # A second clerk acting on a stale page is told to reload, and nothing changes.
    county.reload()
    expect(county.get_by_text("已办结待回访").first).to_be_visible()

    county.get_by_role("link", name="回访").click()
    expect(county.get_by_label(f"#{ticket} 个体工商户设立登记", exact=False)).to_be_checked()
    county.get_by_label("活动名称（可选）").fill("十二月回访")
    county.get_by_role("button", name="发起回访").click()
    expect(county.locator("#n-targets")).to_have_text("1")
    expect(county.locator("#n-sent")).to_have_text("1", timeout=15_000)  # the feeder and dispatcher send; htmx shows it
    campaign_id = int(county.url.rstrip("/").rsplit("/", 1)[-1])
    server.api(
        "POST",
        f"/api/v1/campaigns/{campaign_id}/answers",
        server.keys["hanbin"],  # type: ignore[attr-defined]
        {"ticket_id": ticket, "satisfied": True, "reason": "满意"},
    )
    expect(county.locator("#n-satisfied")).to_have_text("1", timeout=10_000)  # no reload: htmx polling
    expect(county.locator("#n-answered")).to_have_text("1")
    _shot(county, "campaign")

    county.get_by_role("link", name="统计").click()
    expect(county.get_by_role("heading", name="主要指标")).to_be_visible()
    expect(county.get_by_role("img", name="每月好评率")).to_be_visible()
    _shot(county, "stats")

    with ThreadPoolExecutor(1) as pool:
        flag = pool.submit(asyncio.run, _flag_all(server.env["GATEWAY_DATABASE_URL"])).result()
    county.get_by_role("link", name="刷评线索").click()
    county.get_by_role("link", name=f"#{flag}").click()
    expect(county.locator("#flag-status")).to_have_text("待认定")
    assert "13812341234" not in county.content()
    _shot(county, "fraud-flag")

    # Another county's clerk: the ticket's URL gives exactly the page a missing ticket gives.
    other = _person(chromium, server, "hy.clerk")
    other.goto(f"{server.url}/console/tickets/{ticket}")
    foreign = other.locator("main").inner_text()
    _shot(other, "not-found")
    response = other.goto(f"{server.url}/console/tickets/987654")
    assert response is not None and response.status == 404
    assert other.locator("main").inner_text() == foreign
    assert "不存在" in foreign
    for page in (county, unit, other):
        page.context.close()
