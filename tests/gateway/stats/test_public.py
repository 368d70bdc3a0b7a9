"""The public page and JSON: the same figures as the API, nothing that identifies a citizen, cached."""

from __future__ import annotations

import re

from sqlalchemy import event
from sqlmodel import select

from gateway.audit.log import current_head
from gateway.audit.models import PublishedHead

from gateway.web.keys import STORE
from tests.conftest import World

PHONE = "13812341234"


async def test_public_page_shows_the_figures_without_identifying_anyone(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    from tests.gateway.tickets.helpers import Api

    await rate(5)
    bad = await rate(2, reasons=[213], text=f"窗口小王太慢了，电话 {PHONE}，我叫张三丰", citizen={"phone": PHONE, "name": "张三丰"})
    api = Api(client, world)
    await api.resolved(bad["ticket_id"])
    resp = await client.get("/public/stats")
    assert resp.status == 200
    html = await resp.text()
    json_resp = await client.get("/public/stats.json")
    data = await json_resp.json()
    assert data["city"]["valid"] == 2 and data["city"]["counts"]["2"] == 1
    # The page shows exactly the JSON's figures (no figure written by hand).
    api_resp = await client.get("/api/v1/stats", headers=world.auth("operator"))
    assert (await api_resp.json())["total"] == data["city"]
    # The log head beside the figures is the chain's head, recorded as published (gateway audit verify checks it).
    head = data["evaluation_log_head"]
    async with client.app[STORE].transaction() as session:
        current = await current_head(session)
        published = (await session.exec(select(PublishedHead))).all()
    assert current is not None and head["seq"] == current.seq and head["hash"] == current.hash
    assert [(p.seq, p.hash) for p in published] == [(current.seq, current.hash)]
    [row] = data["bad_reviews"]
    assert row["item"] == "个体工商户设立登记" and row["unit"] == "汉滨区市场监督管理局"
    assert row["reasons"] == [{"code": 213, "label": "窗口人员业务不熟练"}]
    assert row["status"] == "resolved" and row["rectification"] == "retrained the window staff"
    for text in (html, await json_resp.text()):
        for secret in (PHONE, "1381234", "张三丰", "小王太慢", "HB-017", "3812341234"):
            assert secret not in text, secret
        assert not re.search(r"1[3-9]\d{9}", text)
    assert "窗口人员业务不熟练" in html and "个体工商户设立登记" in html and "<svg" in html
    assert "<script" not in html
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'none' forbids scripts
    assert resp.headers["X-Frame-Options"] == "DENY"
    css = await client.get("/public/stats.css")
    assert css.status == 200 and css.content_type == "text/css"


async def test_a_second_request_costs_the_database_nothing(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(4)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = client.app[STORE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        first = await client.get("/public/stats")
        assert first.status == 200
        assert statements, "the first request computes the figures"
        statements.clear()
        for path in ("/public/stats", "/public/stats.json", "/public/stats"):
            again = await client.get(path)
            assert again.status == 200
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_public_bad_input_is_a_422(client) -> None:  # type: ignore[no-untyped-def]
    for query, field in (("?colour=red", "colour"), ("?month=2026-13", "month"), ("?month=2099-01", "month")):
        resp = await client.get("/public/stats.json" + query)
        assert resp.status == 422, query
        assert (await resp.json())["error"]["field"] == field
        page = await client.get("/public/stats" + query)
        assert page.status == 422
        assert "无法显示" in await page.text()


async def test_processes_share_the_figures_through_redis(settings, clock, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    from gateway.app import create_app

    shared = settings.model_copy(update={"redis_url": redis_url})
    first = await aiohttp_client(create_app(shared, clock=clock, migrate=False, run_background=False))
    second = await aiohttp_client(create_app(shared, clock=clock, migrate=False, run_background=False))
    resp = await first.get("/public/stats.json")
    assert resp.status == 200
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = second.app[STORE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        again = await second.get("/public/stats.json")
        assert again.status == 200 and await again.json() == await resp.json()
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_public_counties_and_units_equal_the_api_groupings(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    """The page counts once by county and unit and sums the parts: each county and unit shows what the
    department API answers when grouped by region or by unit, tickets included."""
    from tests.gateway.tickets.helpers import Api

    await rate(5)
    await rate(4, org="hanbin-tax")
    bad = await rate(1, org="hanbin-tax", reasons=[115])
    await rate(2, org="hanyin-market", region="610921")
    await rate(3, org="hanyin-market", region="610921")
    await Api(client, world).resolved(bad["ticket_id"], unit="hanbin-tax")
    data = await (await client.get("/public/stats.json")).json()
    for dim, public in (("region", data["counties"]), ("unit", data["units"])):
        resp = await client.get("/api/v1/stats", params={"group_by": dim}, headers=world.auth("operator"))
        answer = await resp.json()
        assert resp.status == 200, answer
        expected = {g["key"][dim]: g["indicators"] for g in answer["groups"]}
        shown = {row[dim]: {k: v for k, v in row.items() if k not in (dim, "name")} for row in public}
        assert len(shown) == 2 if dim == "region" else len(shown) == 3
        assert shown == expected, dim
    assert sum(row["tickets_due"] for row in data["units"]) == data["city"]["tickets_due"] == 2
