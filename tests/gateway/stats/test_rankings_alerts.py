"""Rankings (Wilson lower bound, minimum sample, 连续靠后) and the bad-review-rate alert."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import aiohttp
from aiohttp import web

from gateway.stats.alerts import binomial_tail, is_clear_rise, one_pass
from gateway.wiring.stats import webhook_sender
from gateway.stats.queries import PUBLIC
from gateway.stats.rankings import rankings, wilson_lower
from gateway.stats.rollup import Facts, apply, contributions, merge_tallies
from gateway.stats.models import StatsAlert
from gateway.web.keys import STORE
from tests.conftest import World


def test_wilson_lower_bound_puts_small_perfect_samples_below_large_good_ones() -> None:
    assert wilson_lower(3, 3) < wilson_lower(980, 1000)  # type: ignore[operator]
    assert wilson_lower(0, 0) is None
    assert 0.0 < wilson_lower(5, 10) < 0.5 < wilson_lower(10, 10) < 1.0  # type: ignore[operator]


def test_binomial_tail_and_the_alert_rule() -> None:
    assert abs(binomial_tail(1, 1, 0.3) - 0.3) < 1e-12
    assert abs(binomial_tail(2, 3, 0.5) - 0.5) < 1e-12
    assert binomial_tail(0, 10, 0.1) == 1.0 and binomial_tail(11, 10, 0.1) == 0.0
    assert is_clear_rise(10, 40, 4, 200)[0]  # 25% against a 2% baseline
    assert not is_clear_rise(4, 10, 4, 200)[0]  # fewer than 5 bad reviews
    assert not is_clear_rise(10, 40, 4, 20)[0]  # baseline too small
    assert not is_clear_rise(6, 100, 10, 200)[0]  # 6% against 5%: not clear


def _facts(day: date, unit: int, level: int) -> Facts:
    return Facts(day=day, region_code="610902", unit_org_id=unit, item_code="I", staff_id="", channel="web",
                 level=level, status="valid")


async def _seed(store: Any, rows: list[tuple[date, int, int, int]]) -> None:
    """(day, unit id, level, how many) into the roll-ups."""
    tallies = []
    for day, unit, level, n in rows:
        tallies.extend([contributions(_facts(day, unit, level))] * n)
    async with store.transaction() as session:
        await apply(session, merge_tallies(tallies))


async def test_monthly_ranking_flags_two_months_at_the_bottom(client, world: World) -> None:  # type: ignore[no-untyped-def]
    store = client.app[STORE]
    feb, mar = date(2026, 2, 10), date(2026, 3, 10)
    rows = []
    for unit in range(100, 112):  # twelve units ranked: the bottom tenth is one unit
        good = 40 if unit != 111 else 20
        for day in (feb, mar):
            rows += [(day, unit, 5, good), (day, unit, 1, 40 - good + 1)]
    rows += [(mar, 120, 5, 3)]  # 3 of 3 good: too few to rank
    rows += [(mar, 110, 1, 100)]  # 110 falls to the bottom in March only
    await _seed(store, rows)
    async with store.transaction() as session:
        march = await rankings(session, month=date(2026, 3, 1), kind="unit", min_sample=30, scope=PUBLIC)
    by_unit = {e.unit: e for e in march}
    assert by_unit["120"].rank is None and by_unit["120"].sample == "样本不足"
    assert march[-1].unit == "120"
    ranked = [e for e in march if e.rank is not None]
    assert [e.rank for e in ranked] == list(range(1, 13))
    assert ranked[-1].unit == "110" and ranked[-1].bottom_tenth and not ranked[-1].consecutive_bottom
    assert by_unit["111"].rank == 11 and not by_unit["111"].bottom_tenth
    async with store.transaction() as session:
        await _seed(store, [(mar, 111, 1, 400)])
        march = await rankings(session, month=date(2026, 3, 1), kind="unit", min_sample=30, scope=PUBLIC)
    bottom = [e for e in march if e.bottom_tenth]
    assert [(e.unit, e.consecutive_bottom) for e in bottom] == [("111", True)]


async def test_rankings_api(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(5)
    await rate(5)
    await rate(1, org="hanyin-market", region="610921")
    resp = await client.get("/api/v1/stats/rankings", params={"month": "2026-03", "min_sample": "2"},
                            headers=world.auth("city"))
    body = await resp.json()
    assert resp.status == 200, body
    assert [(e["unit"], e["rank"], e["sample"]) for e in body["entries"]] == [
        ("hanbin-market", 1, "ok"), ("hanyin-market", None, "样本不足")]
    resp = await client.get("/api/v1/stats/rankings", params={"month": "2026-03", "kind": "staff", "min_sample": "1"},
                            headers=world.auth("hanyin"))
    body = await resp.json()
    assert [(e["unit"], e["staff"]) for e in body["entries"]] == [("hanyin-market", "HB-017")]
    for params, field in (({"month": "2026-3"}, "month"), ({"kind": "desk"}, "kind"), ({"month": "2099-01"}, "month"),
                          ({"top": "3"}, "top")):
        resp = await client.get("/api/v1/stats/rankings", params=params, headers=world.auth("city"))
        assert resp.status == 422 and (await resp.json())["error"]["field"] == field, params
    resp = await client.get("/api/v1/stats/analysis", params={"from": "2026-03-01", "to": "2026-03-31"},
                            headers=world.auth("city"))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["top_reasons"][0]["code"] == 115 and body["top_items"][0]["item_name"] == "个体工商户设立登记"
    assert sum(w["bad"] for w in body["weekly"]) == 1


async def test_alert_is_raised_once_and_sent_to_the_webhook(client, world: World, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    received: list[dict[str, Any]] = []
    answer = {"status": 500}

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=answer["status"])

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    server = await aiohttp_server(hook_app)
    store = client.app[STORE]
    today = date(2026, 3, 20)
    rows = []
    for back in range(8, 64):  # the baseline: 56 days with few bad reviews
        day = today - timedelta(days=back)
        rows += [(day, 7, 5, 4)] + ([(day, 7, 1, 1)] if back % 14 == 0 else [])
    for back in range(1, 8):  # the last week: many
        rows += [(today - timedelta(days=back), 7, 5, 4), (today - timedelta(days=back), 7, 2, 2)]
    await _seed(store, rows)
    now = datetime(2026, 3, 20, 2, tzinfo=timezone.utc)
    async with aiohttp.ClientSession() as http:
        send = webhook_sender(http, str(server.make_url("/hook")))
        assert await one_pass(store, send, today=today, at=now) == 1
        assert len(received) == 1  # delivered, but the webhook failed: tried again next pass
        assert await one_pass(store, send, today=today, at=now) == 0  # not raised twice
        assert len(received) == 2
        answer["status"] = 204
        await one_pass(store, send, today=today, at=now)
        await one_pass(store, send, today=today, at=now)
    assert len(received) == 3
    body = received[-1]
    assert body["kind"] == "bad_review_rate_alert" and body["bad"] == 14 and body["valid"] == 42
    assert body["window"] == {"from": "2026-03-13", "to": "2026-03-19"}
    async with store.transaction() as session:
        from sqlmodel import select

        [alert] = (await session.exec(select(StatsAlert))).all()
        assert alert.sent_at is not None and alert.attempts == 3


async def test_a_range_reads_whole_months_and_daily_edges_alike(client, world: World) -> None:  # type: ignore[no-untyped-def]
    from gateway.stats.queries import Selection, compute

    store = client.app[STORE]
    await _seed(store, [(date(2026, 1, 15), 7, 5, 1), (date(2026, 1, 31), 7, 4, 2), (date(2026, 2, 10), 7, 1, 4),
                        (date(2026, 3, 3), 7, 3, 8), (date(2026, 3, 20), 7, 2, 16)])
    from gateway.web.keys import DEPS

    cal, cat = client.app[DEPS].calendar, client.app[DEPS].catalogue
    async with store.transaction() as session:
        for start, end, expected in ((date(2026, 1, 20), date(2026, 3, 10), 14), (date(2026, 1, 1), date(2026, 3, 31), 31),
                                     (date(2026, 2, 1), date(2026, 2, 28), 4), (date(2026, 1, 31), date(2026, 3, 3), 14)):
            by_month = await compute(session, Selection(start=start, end=end), scope=PUBLIC, calendar=cal, catalogue=cat)
            by_day = await compute(session, Selection(start=start, end=end, group_by=("day",)), scope=PUBLIC,
                                   calendar=cal, catalogue=cat)
            assert by_month.total.levels == by_day.total.levels, (start, end)
            assert sum(by_month.total.levels.values()) == expected, (start, end)
