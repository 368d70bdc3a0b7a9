"""`gateway demo`: a scripted end-to-end run on the embedded default, explained in plain words."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from gateway.app import create_app
from gateway.clock import as_utc
from gateway.orgs import add_org, issue_key
from gateway.privacy import mask_phone
from gateway.settings import load_settings
from gateway.store.models import Organisation, OutboundMessage, Ticket
from gateway.web.keys import DEPS, DISPATCHER, PROVIDERS, STORE

ORGS = [
    ("city", "安康市行政审批服务局", "city_bureau", "610900", None),
    ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", "city"),
    ("hanbin-market", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
]


def say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(database: str | None = None) -> int:
    """Run the scenario; returns the process exit code."""
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(database) if database else Path(tmp) / "demo.db"
        settings = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            run_dispatcher=False,
            quiet_hours="",
            sms_provider="console",
            redis_url="",
            telegram_bot_token="",
            # The upload feed with the shipped provincial profile, sent to the console instead of a province.
            province_profile="provincial",
            province_base_url="console",
            province_app_key="demo",
            province_app_secret="demo",
        )
        app = create_app(settings, migrate=True, run_background=False)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            return await _scenario(client)
        finally:
            await client.close()


async def _scenario(client: TestClient) -> int:
    app = client.app
    store, deps = app[STORE], app[DEPS]
    now = deps.clock.now()
    say("1. Registering the organisations of one city (安康, region 6109xx):")
    keys: dict[str, str] = {}
    async with store.transaction() as session:
        for code, name, kind, region, parent in ORGS:
            org = await add_org(
                session, code=code, name=name, kind=kind, region_code=region, parent_code=parent, at=now
            )
            keys[code] = await issue_key(session, org=org, label="demo", at=now)
            say(f"   - {name} ({kind}, region {region})")

    def auth(code: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[code]}"}

    completed = (now - timedelta(hours=1)).astimezone(timezone.utc).isoformat()
    case = {
        "case_no": "HB-2026-000123",
        "item_code": "11610902MB0001",
        "item_name": "个体工商户设立登记",
        "org_code": "hanbin-market",
        "region_code": "610902",
        "service_channel": "window",
        "staff_id": "HB-017",
        "completed_at": completed,
        "citizen": {"phone": "13812341234"},
    }
    say("\n2. The market-regulation bureau's system reports a finished case (POST /api/v1/cases).")
    resp = await client.post("/api/v1/cases", json=case, headers=auth("hanbin-market"))
    body: dict[str, Any] = await resp.json()
    if resp.status != 201:
        say(f"   unexpected answer {resp.status}: {body}")
        return 1
    token = body["invitation"]["token"]
    say(f"   Answer {resp.status}: invitation {token}, rating link {body['invitation']['rating_url']}")
    expires = deps.calendar.describe_due(datetime.fromisoformat(body["invitation"]["expires_at"]))
    say(f"   The link may be used until {expires} Asia/Shanghai (7 working days, Art. 11).")

    say("\n3. The dispatcher sends the queued prompt through the console SMS provider:")
    await app[DISPATCHER].run_once()
    for message in app[PROVIDERS]["sms"].sent:
        say(f"   to {mask_phone(message.to)}: {message.body}")

    say("\n4. The citizen opens the link (GET records nothing) and taps 2 不满意; the page asks why.")
    page = await client.get(f"/r/{token}")
    say(f"   GET /r/{token} → {page.status}; nothing recorded yet.")
    resp = await client.post(f"/r/{token}", data={"level": "2"})
    say(f"   POST level 2 → {resp.status}: the reasons form (Art. 8: a bad review needs content).")
    resp = await client.post(
        f"/r/{token}", data={"level": "2", "reasons": ["213", "210"], "text": "同一份证明交了三次"}
    )
    say(f"   POST level 2 with reasons 213, 210 and a sentence → {resp.status}: recorded.")

    async with store.transaction() as session:
        ticket = (await session.exec(select(Ticket))).one()
        approval = await session.get(Organisation, ticket.approval_org_id)
        unit = await session.get(Organisation, ticket.unit_org_id) if ticket.unit_org_id else None
        queued = (await session.exec(select(OutboundMessage).where(OutboundMessage.status == "queued"))).all()
    local_due = deps.calendar.describe_due(as_utc(ticket.due_at))
    say("\n5. The bad review became a work order in the same transaction:")
    say(f"   ticket #{ticket.id}, status {ticket.status}, level {ticket.level}")
    say(
        f"   waiting at {approval.name if approval else '?'} to be transferred to {unit.name if unit else 'a unit'} (Art. 14-15)"
    )
    say(
        f"   due {local_due} Asia/Shanghai (10 working days, general){' — provisional' if ticket.due_provisional else ''}"
    )
    say(f"   messages still queued: {len(queued)}")
    await _walk_ticket(client, ticket.id, auth)
    await _upload(client)
    await _fraud_flag(client, auth)
    await _show_indicators(client, auth)
    if not await _verify_log(client):
        return 1
    say("\nDone. Everything above ran on a throwaway SQLite database with the console SMS provider")
    say("and a console province.")
    return 0


async def _walk_ticket(client: TestClient, ticket_id: int, auth: Any) -> None:
    """Transfer, accept, resolve and reply: the closed loop through the department API."""
    steps = [
        ("hanbin", {"action": "transfer"}, "the county department transfers it to the handling unit"),
        (
            "hanbin-market",
            {"action": "accept", "category": "general"},
            "the unit accepts it as general (10 working days)",
        ),
        (
            "hanbin-market",
            {
                "action": "resolve",
                "rectification": "已对窗口人员开展业务培训，证明材料一次收取",
                "reply": "您反映的重复提交证明问题已整改，感谢监督。",
            },
            "the unit records the rectification and its reply to the evaluator",
        ),
    ]
    say("\n6. The work order goes round the closed loop (Art. 15(二)):")
    for org, action, words in steps:
        resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", json=action, headers=auth(org))
        body = await resp.json()
        if resp.status != 200:
            say(f"   - {words}: refused ({resp.status}): {body.get('error', {}).get('message')}")
            return
        due = client.app[DEPS].calendar.describe_due(datetime.fromisoformat(body["due_at"]))
        say(f"   - {words}: now {body['status']}, due {due}")
    await client.app[DISPATCHER].run_once()
    replies = [m for m in client.app[PROVIDERS]["sms"].sent if "整改" in m.body]
    for message in replies:
        say(f"   reply sent to {mask_phone(message.to)}: {message.body}")


async def _upload(client: TestClient) -> None:
    """The feed to the provincial platform: the evaluation and its rectification, as the province sees them."""
    from gateway.upload.transport import ConsoleProvince
    from gateway.wiring.upload import UPLOAD_FEED

    feed = client.app[UPLOAD_FEED]
    if feed is None or not isinstance(feed.transport, ConsoleProvince):
        return
    while await feed.run_once():
        pass
    bodies = [json.loads(body) for body in feed.transport.received]
    say(f"\n7. The upload feed sent {len(bodies)} records to the provincial platform (Art. 18), in the field names")
    say(f"   of the shipped profile '{feed.profile.name}' (a console stands in for the province):")
    for line in json.dumps(bodies[0], ensure_ascii=False, indent=2).splitlines():
        say(f"   {line}")
    for body in bodies[1:]:
        say(
            f"   then {body['assessId']} (assessNumber {body['assessNumber']} 追加): rectifyInfo {body.get('rectifyInfo')!r}"
        )


async def _fraud_flag(client: TestClient, auth: Any) -> None:
    """One number rates five services at once: the detector flags it for the county to rule."""
    from gateway.wiring.fraud import FRAUD_DETECTOR

    say("\n8. Fraud detection (Art. 19): one number rates five more services at once, from one browser.")
    now = client.app[DEPS].clock.now()
    for n in range(5):
        case = {
            "case_no": f"HB-2026-00020{n}",
            "item_code": "11610902MB0001",
            "item_name": "个体工商户设立登记",
            "org_code": "hanbin-market",
            "region_code": "610902",
            "service_channel": "online",
            "completed_at": (now - timedelta(hours=2)).astimezone(timezone.utc).isoformat(),
            "citizen": {"phone": "13900001111"},
        }
        resp = await client.post("/api/v1/cases", json=case, headers=auth("hanbin-market"))
        token = (await resp.json())["invitation"]["token"]
        await client.post(f"/r/{token}", json={"level": 5})
    detector = client.app[FRAUD_DETECTOR]
    detector.lag = timedelta(0)  # the demo does not wait for the read lag
    await detector.run_until_idle()
    resp = await client.get("/api/v1/fraud/flags", headers=auth("hanbin"))
    page = await resp.json()
    for flag in page["items"]:
        say(
            f"   flag #{flag['id']}: rule {flag['rule']}, {flag['subject']}, {flag['evaluation_count']} ratings, {flag['status']}"
        )
    burst = [f for f in page["items"] if f["rule"] == "burst"]
    if burst:
        flag_id = burst[0]["id"]
        resp = await client.post(
            f"/api/v1/fraud/flags/{flag_id}/ruling",
            headers=auth("hanbin"),
            json={"outcome": "confirmed", "note": "同一号码十分钟内评价五项服务，经核实为刷好评"},
        )
        ruled = await resp.json()
        say("   (the same browser rated the first service too: hence the device flag)")
        say(
            f"   the county department confirms flag #{flag_id}: {ruled['decisions_written']} ratings stop counting; "
            "they stay stored, unchanged (an evaluation_decision each)."
        )


async def _show_indicators(client: TestClient, auth: Any) -> None:
    """The month's indicators for the city, as GET /api/v1/stats computes them (docs/statistics.md)."""
    from gateway.stats.demo import indicator_lines

    resp = await client.get("/api/v1/stats", headers=auth("city"))
    body = await resp.json()
    say("\n9. The city's indicators this month (GET /api/v1/stats; the public page /public/stats shows the same):")
    if resp.status != 200:
        say(f"   refused ({resp.status}): {body}")
        return
    for line in indicator_lines(body):
        say(f"   {line}")
    # The public figures carry the evaluation log's head, recorded as published; verify checks it below.
    resp = await client.get("/public/stats.json")
    public = await resp.json()
    head = public.get("evaluation_log_head") if resp.status == 200 else None
    if head is None:
        say(f"   GET /public/stats.json → {resp.status}: no evaluation-log head published")
        return
    say(f"   GET /public/stats.json: the same figures (N = {public['city']['valid']}) and the evaluation-log head,")
    say(f"   recorded as published: seq {head['seq']} sha256 {head['hash']}")


async def _verify_log(client: TestClient) -> bool:
    """The evaluation log holds the rating above, chained; `gateway audit verify` recomputes it."""
    from gateway.audit.verify import verify

    result = await verify(client.app[STORE].engine)
    say("\n10. The evaluation log (Art. 19): the rating is chained in a tamper-evident log (gateway audit verify):")
    say(f"   {result.summary()}")
    return result.ok
