"""The statistics page shows the API's figures for the person's jurisdiction; fraud flags are listed, read
and ruled in the console (a supervisor of the approval department rules; each ruling is audited)."""

from __future__ import annotations

import itertools
import re
from typing import Any

from sqlmodel import select

from gateway.console.models import ConsoleAudit
from gateway.fraud.models import FlagEvaluation
from gateway.store.models import EvaluationDecision, FraudFlag
from gateway.web.keys import DEPS, STORE
from tests.conftest import World, case_payload
from tests.gateway.console.conftest import Browser

_numbers = itertools.count(1)


async def rate(client: Any, world: World, level: int, *, org: str = "hanbin-market", region: str = "610902",
               phone: str = "13812341234") -> int:
    """Report a case and rate it through the rating page; the evaluation's id."""
    payload = case_payload(f"CS-{next(_numbers):05d}", org_code=org, region_code=region, citizen={"phone": phone},
                           completed_at=client.app[DEPS].clock.now().isoformat())
    resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(org))
    body = await resp.json()
    assert resp.status == 201, body
    rating: dict[str, Any] = {"level": level}
    if level <= 2:
        rating["reasons"] = [213 if level == 2 else 115]
    resp = await client.post(f"/r/{body['invitation']['token']}", json=rating)
    rated = await resp.json()
    assert resp.status == 201, rated
    return int(rated["evaluation_id"])


def _shown(html: str) -> dict[str, str]:
    return dict(re.findall(r'<dd data-k="([a-z_]+)">([^<]*)</dd>', html))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


async def test_stats_page_shows_the_apis_figures_for_the_jurisdiction(
    client, people, browser: Browser, new_browser  # type: ignore[no-untyped-def]
):
    for level in (5, 5, 4, 2, 1):
        await rate(client, people, level)
    await rate(client, people, 1, org="hanyin-market", region="610921")  # another county's
    await browser.sign_in("hb.clerk")
    status, html = await browser.get("/console/stats")
    assert status == 200
    resp = await client.get("/api/v1/stats", headers=people.auth("hanbin"))
    api = (await resp.json())["total"]
    shown = _shown(html)
    assert shown["valid"] == str(api["valid"]) == "5"
    for key in ("good_rate", "bad_rate", "satisfied_rate", "participation_rate", "rectification_rate"):
        assert shown[key] == _pct(api[key]), key
    assert shown["good_rate"] == "60.0%"
    # The trend: a chart beside a table, the chart without inline styles (the CSP has no 'unsafe-inline').
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2 and 'role="img"' in html
    assert " style=" not in html and "<style" not in html and "<script>" not in html
    month = client.app[DEPS].clock.now().strftime("%Y-%m")
    assert re.search(rf'<th scope="row">{month}</th><td>5</td><td>2</td><td>60.0%</td>', html)
    # Rankings and analysis: the same functions as /rankings and /analysis.
    resp = await client.get("/api/v1/stats/rankings", params={"month": month}, headers=people.auth("hanbin"))
    entries = (await resp.json())["entries"]
    assert [e["unit_name"] for e in entries] == ["汉滨区市场监督管理局"] and entries[0]["sample"] == "样本不足"
    assert "汉滨区市场监督管理局" in html and "样本不足" in html
    resp = await client.get("/api/v1/stats/analysis", headers=people.auth("hanbin"))
    for reason in (await resp.json())["top_reasons"]:
        assert f"<td>{reason['label']}</td><td>{reason['n']}</td>" in html
    # Another county sees its own figures only.
    other = await new_browser()
    await other.sign_in("hy.clerk")
    status, html = await other.get("/console/stats")
    assert _shown(html)["valid"] == "1" and _shown(html)["good_rate"] == "0.0%"


async def test_stats_period_selector_range_and_bad_input(
    client, people, browser: Browser  # type: ignore[no-untyped-def]
):
    await rate(client, people, 5)
    await rate(client, people, 2)
    today = client.app[DEPS].calendar.local_date(client.app[DEPS].clock.now())
    await browser.sign_in("hb.clerk")
    params = {"mode": "range", "from": today.replace(day=1).isoformat(), "to": today.isoformat()}
    status, html = await browser.get("/console/stats", params=params)
    assert status == 200
    resp = await client.get("/api/v1/stats", params={"from": params["from"], "to": params["to"]},
                            headers=people.auth("hanbin"))
    api = (await resp.json())["total"]
    assert _shown(html)["valid"] == str(api["valid"]) == "2" and _shown(html)["good_rate"] == _pct(api["good_rate"])
    status, html = await browser.get("/console/stats", params={"mode": "range", "from": params["from"]})
    assert status == 422 and "结束日期" in html
    status, html = await browser.get("/console/stats", params={"month": "2999-01"})
    assert status == 422 and "月份" in html
    status, html = await browser.get("/console/stats", params={"mode": "range", "from": params["to"],
                                                               "to": "2000-01-01"})
    assert status == 422 and "结束日期" in html
    status, html = await browser.get("/console/stats", params={"month": "2000-01"})
    assert status == 200 and _shown(html)["valid"] == "0"


async def _flag(client: Any, evaluation_ids: list[int], region: str = "610902", status: str = "open",
                rule: str = "burst") -> int:
    async with client.app[STORE].transaction() as session:
        flag = FraudFlag(rule=rule, subject="citizen 1", region_code=region, status=status,
                         evidence={"services": len(evaluation_ids), "window_minutes": 30, "evaluation_ids": evaluation_ids,
                                   "note": "rater 13812341234"},
                         evaluation_count=len(evaluation_ids), created_at=client.app[DEPS].clock.now())
        session.add(flag)
        await session.flush()
        for eid in evaluation_ids:
            session.add(FlagEvaluation(flag_id=flag.id, evaluation_id=eid, rule=rule))  # type: ignore[arg-type]
        return flag.id  # type: ignore[return-value]


async def test_flags_are_listed_open_first_and_read_within_jurisdiction(
    client, people, new_browser  # type: ignore[no-untyped-def]
):
    good = [await rate(client, people, 5) for _ in range(2)]
    old = await _flag(client, good[:1], status="dismissed", rule="device")
    mine = await _flag(client, good)
    theirs = await _flag(client, [await rate(client, people, 5, org="hanyin-market", region="610921")],
                         region="610921")
    clerk = await new_browser()
    await clerk.sign_in("hb.clerk")
    status, html = await clerk.get("/console/fraud")
    assert status == 200 and 'href="/console/fraud"' in html
    listed = [int(i) for i in re.findall(r'<a href="/console/fraud/(\d+)">#', html)]
    assert listed == [mine, old]  # open first; another county's flag is not there
    status, html = await clerk.get(f"/console/fraud/{mine}")
    assert status == 200 and "同一评价人短时间内多次评价" in html and "待认定" in html
    assert "<dt>评价的服务数</dt><dd>2</dd>" in html and "<dt>时间窗（分钟）</dt><dd>30</dd>" in html
    assert "<dt>note</dt>" in html  # a key without a label is shown as it is
    assert all(f"#{e}" in html for e in good)
    assert "13812341234" not in html and "138****1234" not in html  # no phone numbers, whole or masked
    assert 'action="/console/fraud/' not in html  # a clerk reads; the supervisor rules
    status, foreign = await clerk.get(f"/console/fraud/{theirs}")
    status_missing, missing = await clerk.get("/console/fraud/99999999")
    assert status == status_missing == 404 and "不在本单位管辖范围内" in foreign
    assert foreign == missing  # the same page: nothing tells the flag exists
    unit = await new_browser()
    await unit.sign_in("market.clerk")
    status, html = await unit.get("/console/fraud")
    assert status == 403 and "承办单位不能查看" in html
    _, html = await unit.get("/console/tickets")
    assert 'href="/console/fraud"' not in html


async def test_flag_list_pages_by_state_and_rule_and_refuses_bad_filters(
    client, people, browser: Browser  # type: ignore[no-untyped-def]
):
    from gateway.console.fraud_views import PER_PAGE

    good = await rate(client, people, 5)
    # (Flags without evaluations: the list is about flags; an evaluation is held once per rule.)
    opened = [await _flag(client, [], rule="burst" if n % 2 else "device") for n in range(PER_PAGE + 5)]
    confirmed = await _flag(client, [good], status="confirmed")
    await browser.sign_in("hb.clerk")

    def ids(html: str, table: str = "flags") -> list[int]:
        part = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0] if f'id="{table}"' in html else ""
        return [int(i) for i in re.findall(r'<a href="/console/fraud/(\d+)">#', part)]

    status, first = await browser.get("/console/fraud")
    assert status == 200 and ids(first) == sorted(opened, reverse=True)[:PER_PAGE]
    assert ids(first, "ruled-flags") == [confirmed]
    after = re.search(r'href="/console/fraud\?status=open&amp;before=(\d+)" rel="next"', first)
    assert after is not None and int(after.group(1)) == ids(first)[-1]
    status, second = await browser.get("/console/fraud", params={"status": "open", "before": after.group(1)})
    assert status == 200 and ids(second) == sorted(opened, reverse=True)[PER_PAGE:]
    assert 'rel="next"' not in second and 'id="ruled-flags"' not in second
    status, html = await browser.get("/console/fraud", params={"status": "open", "rule": "device"})
    assert status == 200 and ids(html) == [f for n, f in enumerate(opened) if n % 2 == 0][::-1]
    status, html = await browser.get("/console/fraud", params={"status": "confirmed"})
    assert status == 200 and ids(html) == [confirmed]
    for params, said in (({"status": "closed"}, "线索状态"), ({"rule": "nope"}, "刷评规则"),
                         ({"before": "-1"}, "分页位置"), ({"order": "asc"}, "order")):
        status, html = await browser.get("/console/fraud", params=params)
        assert status == 422 and said in html, params


async def _state(client: Any, flag_id: int) -> tuple[str, int, list[ConsoleAudit]]:
    async with client.app[STORE].transaction() as session:
        flag = await session.get(FraudFlag, flag_id)
        decisions = (await session.exec(select(EvaluationDecision))).all()
        audits = (await session.exec(select(ConsoleAudit).where(ConsoleAudit.kind == "fraud_ruling"))).all()
        return flag.status, len(decisions), list(audits)  # type: ignore[union-attr]


async def test_a_supervisor_rules_once_with_csrf_and_an_audit_row(
    client, people, new_browser  # type: ignore[no-untyped-def]
):
    good = [await rate(client, people, 5) for _ in range(2)]
    flag_id = await _flag(client, good)
    theirs = await _flag(client, [await rate(client, people, 5, org="hanyin-market", region="610921")],
                         region="610921")
    clerk = await new_browser()
    await clerk.sign_in("hb.clerk")
    await clerk.get(f"/console/fraud/{flag_id}")
    status, html = await clerk.post(f"/console/fraud/{flag_id}/ruling", {"outcome": "confirmed", "note": "查实"})
    assert status == 403 and "科室负责人" in html
    assert await _state(client, flag_id) == ("open", 0, [])
    chief = await new_browser()
    await chief.sign_in("hb.chief")
    status, html = await chief.get(f"/console/fraud/{flag_id}")
    assert f'action="/console/fraud/{flag_id}/ruling"' in html
    status, html = await chief.post(f"/console/fraud/{flag_id}/ruling", {"outcome": "confirmed", "note": "x"},
                                    csrf=False)
    assert status == 403 and await _state(client, flag_id) == ("open", 0, [])
    status, html = await chief.post(f"/console/fraud/{flag_id}/ruling", {"outcome": "confirmed", "note": "  "})
    assert status == 422 and "认定说明" in html and await _state(client, flag_id) == ("open", 0, [])
    status, html = await chief.post(f"/console/fraud/{flag_id}/ruling", {"outcome": "maybe", "note": "查实"})
    assert status == 422 and "认定结果" in html
    status, html = await chief.post(f"/console/fraud/{theirs}/ruling", {"outcome": "confirmed", "note": "查实"})
    assert status == 404 and "不在本单位管辖范围内" in html
    status, html = await chief.post(f"/console/fraud/{flag_id}/ruling",
                                    {"outcome": "confirmed", "note": "核实为同一人代评"})
    assert status == 200 and "认定已保存" in html and "认定属实" in html and "核实为同一人代评" in html
    state, decisions, audits = await _state(client, flag_id)
    assert state == "confirmed" and decisions == 2  # both good reviews stop counting
    assert len(audits) == 1 and audits[0].login == "hb.chief"
    assert audits[0].detail == {"flag_id": flag_id, "outcome": "confirmed", "decisions_written": 2}
    status, html = await chief.post(f"/console/fraud/{flag_id}/ruling", {"outcome": "dismissed", "note": "改判"})
    assert status == 409 and "不能更改" in html
    assert (await _state(client, flag_id))[0] == "confirmed" and len((await _state(client, flag_id))[2]) == 1
    # The statistics page no longer counts them (the API's figures).
    _, html = await chief.get("/console/stats")
    assert _shown(html)["valid"] == "0"
