"""GET /api/v1/tickets: scoped to the caller's jurisdiction, filtered, paged in a stable order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.gateway.tickets.helpers import Api

CST = timezone(timedelta(hours=8))


def ids(page: dict) -> list[int]:
    return [item["id"] for item in page["items"]]


async def test_each_caller_lists_its_jurisdiction(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    hanbin = await make_ticket()
    hanyin = await make_ticket(org="hanyin-market", region="610921")
    city = await make_ticket(org="city-police", region="610900")
    await api.transferred(hanbin)
    expected = {
        "operator": [city, hanyin, hanbin],
        "city": [city, hanyin, hanbin],
        "hanbin": [hanbin],
        "hanyin": [hanyin],
        "hanbin-market": [hanbin],
        "hanbin-tax": [],
        "hanyin-market": [hanyin],  # proposed to it, though not transferred yet
        "city-police": [city],
    }
    for org, wanted in expected.items():
        status, page = await api.list(org)
        assert status == 200, page
        assert ids(page) == wanted, org


async def test_filters(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(datetime(2026, 3, 2, 10, tzinfo=CST))
    old = await make_ticket()
    clock.set(datetime(2026, 3, 4, 23, 59, tzinfo=CST))
    late_evening = await make_ticket()
    clock.set(datetime(2026, 3, 5, 0, 1, tzinfo=CST))
    other_unit = await make_ticket(org="hanbin-tax")
    county = await make_ticket(org="hanyin-market", region="610921")
    await api.in_progress(old, category="simple")  # due 2026-03-12 24:00 (received 03-05)
    await api.transferred(other_unit)
    clock.set(datetime(2026, 3, 13, 9, tzinfo=CST))

    async def listed(**query: object) -> list[int]:
        status, page = await api.list("city", **query)
        assert status == 200, page
        return ids(page)

    assert await listed(status="in_progress") == [old]
    assert await listed(status="dispatching,transferred") == [county, other_unit, late_evening]
    assert await listed(region="610921") == [county]
    assert await listed(unit="hanbin-tax") == [other_unit]
    assert await listed(unit="hanbin-market") == [late_evening, old]
    assert await listed(overdue="true") == [old]
    assert await listed(overdue="false") == [county, other_unit, late_evening]
    assert await listed(level=2) == [county, other_unit, late_evening, old]
    assert await listed(level=1) == []
    # Days are local (Asia/Shanghai) and inclusive.
    assert await listed(created_from="2026-03-04", created_to="2026-03-04") == [late_evening]
    assert await listed(created_from="2026-03-05") == [county, other_unit]
    assert await listed(created_to="2026-03-03") == [old]
    assert await listed(created_from="0001-01-01", created_to="9999-12-31") == [county, other_unit, late_evening, old]
    ticket = await api.ticket("city", old)
    assert ticket["overdue"] is True and ticket["unit_org"]["code"] == "hanbin-market"


async def test_pages_follow_the_cursor(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    made = [await make_ticket() for _ in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        status, page = await api.list("hanbin", **query)
        assert status == 200
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True)
    status, page = await api.list("hanbin", limit=5)
    assert page["next_cursor"] is None and len(page["items"]) == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"status": "DISPATCHING"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"overdue": "perhaps"}, "overdue"),
        ({"level": 3}, "level"),
        ({"region": "6109"}, "region"),
        ({"created_from": "2026-02-30"}, "created_from"),
        ({"cursor": "abc"}, "cursor"),
        ({"unit": "nobody"}, "unit"),
        ({"overdeu": "true"}, "overdeu"),
    ],
)
async def test_bad_filters_say_which(query: dict, field: str, api: Api, world) -> None:  # type: ignore[no-untyped-def]
    status, body = await api.list("hanbin", **query)
    assert status == 422, body
    assert body["error"]["field"] == field
