"""Two rating rules on every way in: a GET never records, and a bad rating (level 1 or 2) needs reasons or
text before anything is recorded (Art. 8)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from gateway.store.models import Evaluation, Invitation, Ticket
from gateway.web.keys import STORE
from tests.gateway.evaluations.helpers import count, report


async def _token(client, world) -> str:  # type: ignore[no-untyped-def]
    return (await report(client, world))["invitation"]["token"]


@pytest.mark.parametrize(
    "query", ["?level=5", "?level=1&reasons=115", "?c=sms&level=4&staff_level=5", "?level=2&text=%E6%85%A2&via=link"]
)
async def test_a_get_never_records_whatever_its_query(query, client, world):  # type: ignore[no-untyped-def]
    token = await _token(client, world)
    resp = await client.get(f"/r/{token}{query}")  # a one-tap link, a prefetcher, a link preview
    assert resp.status == 200
    assert await count(client, Evaluation) == 0 and await count(client, Ticket) == 0
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(Invitation))).one().status == "open"


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("extra", [{}, {"reasons": []}, {"text": "   "}, {"reasons": [], "text": ""}])
async def test_a_bad_rating_without_content_is_refused_on_the_page(level, extra, client, world):  # type: ignore[no-untyped-def]
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", json={"level": level, **extra})
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] in ("reasons", "text"), body
    assert await count(client, Evaluation) == 0 and await count(client, Ticket) == 0


@pytest.mark.parametrize("level", [1, 2])
async def test_a_bad_rating_without_content_is_refused_by_the_api(level, client, world):  # type: ignore[no-untyped-def]
    token = await _token(client, world)
    resp = await client.post("/api/v1/evaluations", json={"token": token, "level": level, "channel": "phone"},
                             headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] == "reasons", body
    assert await count(client, Evaluation) == 0
    # With its text it is recorded: the rule asks for content, not for a preset reason.
    resp = await client.post("/api/v1/evaluations", json={"token": token, "level": level, "channel": "phone",
                                                           "text": "窗口让我跑了三趟"}, headers=world.auth("hanbin-market"))
    assert resp.status == 201, await resp.json()
    assert await count(client, Evaluation) == 1


async def test_a_bad_rating_form_without_content_records_nothing(client, world):  # type: ignore[no-untyped-def]
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", data={"level": "2", "via": "link", "text": "  "})
    assert resp.status == 200 and 'name="reasons"' in await resp.text()  # asked for the reasons first
    assert await count(client, Evaluation) == 0
