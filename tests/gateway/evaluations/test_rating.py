"""Rating: the page, the API for evaluator devices, one evaluation per service, tickets for bad ones."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import segno
from sqlalchemy import text
from sqlmodel import select

from gateway.store.models import Evaluation, Invitation, Organisation, Ticket, TicketEvent
from gateway.web.keys import STORE
from tests.gateway.evaluations.helpers import count, report


async def _token(client, world, **overrides) -> str:
    return (await report(client, world, **overrides))["invitation"]["token"]


async def _only(client, model):
    async with client.app[STORE].transaction() as session:
        return (await session.exec(select(model))).one()


async def test_get_shows_the_service_and_never_records(client, world):
    token = await _token(client, world)
    for _ in range(3):  # link previews and prefetchers GET the link
        resp = await client.get(f"/r/{token}")
        assert resp.status == 200
    head = await client.head(f"/r/{token}")
    assert head.status == 200
    page = await resp.text()
    assert "个体工商户设立登记" in page and "非常满意" in page and "非常不满意" in page
    assert page.count('name="level"') == 5 and "窗口工作人员" in page  # window case: optional staff rating
    assert resp.headers["Cache-Control"] == "no-store"
    assert await count(client, Evaluation) == 0
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(Invitation))).one().status == "open"


async def test_one_tap_good_rating_from_the_page(client, world):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", data={"level": "5", "via": "link"})
    assert resp.status == 201 and "感谢您的评价" in await resp.text()
    evaluation = await _only(client, Evaluation)
    assert (evaluation.level, evaluation.channel, evaluation.staff_id) == (5, "web", "HB-017")
    assert await count(client, Ticket) == 0


async def test_rating_through_the_qr_code_records_channel_qr(client, world):
    token = await _token(client, world)
    page = await (await client.get(f"/r/{token}?c=qr")).text()
    assert 'name="via" value="qr"' in page
    assert (await client.post(f"/r/{token}", data={"level": "4", "via": "qr"})).status == 201
    assert (await _only(client, Evaluation)).channel == "qr"


async def test_qr_images_encode_the_link(client, world):
    body = await report(client, world)
    png = await client.get(f"/r/{body['invitation']['token']}/qr.png")
    assert png.status == 200 and png.headers["Content-Type"] == "image/png"
    data = await png.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    expected = io.BytesIO()
    segno.make(body["invitation"]["rating_url"] + "?c=qr", error="m").save(expected, kind="png", scale=8, border=2)
    assert data == expected.getvalue()  # exactly the symbol of the link with the qr channel marker
    svg = await client.get(f"/r/{body['invitation']['token']}/qr.svg")
    assert svg.status == 200 and b"<svg" in await svg.read()
    assert (await client.get("/r/doesnotexist/qr.png")).status == 404


async def test_bad_rating_without_content_asks_for_reasons_first(client, world):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", data={"level": "2", "via": "link"})
    page = await resp.text()
    assert resp.status == 200 and "窗口人员业务不熟练" in page and 'name="reasons"' in page
    assert await count(client, Evaluation) == 0  # nothing recorded until the content is there (Art. 8)
    resp = await client.post(f"/r/{token}", data={"level": "2", "via": "link", "reasons": ["213", "210"], "text": "跑了三趟"})
    assert resp.status == 201 and "转交相关部门" in await resp.text()
    evaluation = await _only(client, Evaluation)
    assert evaluation.reason_codes == [210, 213] and evaluation.content == "跑了三趟"


async def test_bad_rating_by_json_without_content_is_422(client, world):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", json={"level": 1})
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] == "reasons" and "Art. 8" in body["error"]["message"]
    resp = await client.post(f"/r/{token}", json={"level": 1, "reasons": [213]})
    assert resp.status == 422 and "level 2" in (await resp.json())["error"]["message"]
    assert await count(client, Evaluation) == 0


async def test_bad_rating_opens_a_routed_ticket_with_due_time(client, world):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", json={"level": 2, "reasons": [213], "text": "不熟悉业务"})
    assert resp.status == 201
    ticket_id = (await resp.json())["ticket_id"]
    async with client.app[STORE].transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        approval = await session.get(Organisation, ticket.approval_org_id)
        unit = await session.get(Organisation, ticket.unit_org_id)
        events = (await session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id))).all()
    assert (approval.code, unit.code) == ("hanbin", "hanbin-market")  # county case → county department (Art. 14)
    assert ticket.status == "dispatching" and ticket.assignee_org_id == approval.id
    assert ticket.responsibility == "handling" and ticket.category == "general"
    # received Wed 2026-03-04; 10 working days → Wed 2026-03-18, due at 24:00 Shanghai
    assert ticket.due_at.astimezone(timezone.utc).replace(tzinfo=None) == datetime(2026, 3, 18, 16, 0)
    assert not ticket.due_provisional
    assert [e.action for e in events] == ["created"] and events[0].data["reasons"] == [213]


async def test_city_level_case_goes_to_the_city_bureau(client, world):
    token = await _token(client, world, org="city-police", org_code="city-police", region_code="610900", case_no="C-1")
    resp = await client.post(f"/r/{token}", json={"level": 1, "reasons": [115]})
    ticket = await _only(client, Ticket)
    async with client.app[STORE].transaction() as session:
        assert (await session.get(Organisation, ticket.approval_org_id)).code == "city"
    assert resp.status == 201


async def test_platform_reasons_go_to_the_platform_builder(client, world):
    token = await _token(client, world, service_channel="online", staff_id=None)
    assert (await client.post(f"/r/{token}", json={"level": 2, "reasons": [211]})).status == 201
    ticket = await _only(client, Ticket)
    async with client.app[STORE].transaction() as session:
        assert (await session.get(Organisation, ticket.unit_org_id)).code == "platform"
    assert ticket.responsibility == "platform"


async def test_twenty_simultaneous_ratings_record_exactly_one(client, world):
    token = await _token(client, world)
    levels = [1 + i % 5 for i in range(20)]
    responses = await asyncio.gather(
        *(client.post(f"/r/{token}", json={"level": lv, "reasons": [213] if lv == 2 else [115] if lv == 1 else []}) for lv in levels)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 1 and statuses.count(409) == 19, statuses
    assert await count(client, Evaluation) == 1
    evaluation = await _only(client, Evaluation)
    assert await count(client, Ticket) == (1 if evaluation.level <= 2 else 0)


async def test_second_rating_is_refused_with_a_clear_page(client, world):
    token = await _token(client, world)
    assert (await client.post(f"/r/{token}", data={"level": "4"})).status == 201
    again = await client.post(f"/r/{token}", data={"level": "1", "reasons": ["115"]})
    assert again.status == 409 and "已评价" in await again.text()
    as_json = await client.post(f"/r/{token}", json={"level": 3})
    assert as_json.status == 409 and (await as_json.json())["error"]["code"] == "conflict"
    page = await client.get(f"/r/{token}")
    assert page.status == 409 and "只能评价一次" in await page.text()
    assert await count(client, Evaluation) == 1


async def test_link_expires_after_seven_working_days(client, world, clock):
    token = await _token(client, world)  # completed Wed 2026-03-04 → rating until 2026-03-13 24:00
    clock.set(datetime(2026, 3, 13, 15, 59, 59, tzinfo=timezone.utc))
    assert (await client.get(f"/r/{token}")).status == 200
    clock.set(datetime(2026, 3, 13, 16, 0, tzinfo=timezone.utc))
    page = await client.get(f"/r/{token}")
    assert page.status == 410 and "已结束" in await page.text()
    resp = await client.post(f"/r/{token}", json={"level": 5})
    assert resp.status == 410 and (await resp.json())["error"]["code"] == "expired"
    assert await count(client, Evaluation) == 0


async def test_unknown_tokens_reveal_nothing(client, world):
    for token in ("AAAAAAAAAAAA", "x", "a" * 40, "%00"):
        page = await client.get(f"/r/{token}")
        assert page.status == 404 and "未找到" in await page.text()
        resp = await client.post(f"/r/{token}", json={"level": 5})
        assert resp.status == 404
        assert set((await resp.json())["error"]) == {"code", "message"}


async def test_staff_rating_only_for_window_services(client, world):
    token = await _token(client, world, case_no="W-1")
    assert (await client.post(f"/r/{token}", json={"level": 4, "staff_level": 5})).status == 201
    online = await _token(client, world, case_no="O-1", service_channel="online", staff_id=None)
    resp = await client.post(f"/r/{online}", json={"level": 4, "staff_level": 5})
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "staff_level"
    page = await (await client.get(f"/r/{online}")).text()
    assert "窗口工作人员" not in page


@pytest.mark.parametrize("payload", [
    {"level": 6}, {"level": 0}, {"level": "5"}, {"level": 5.5}, {}, {"level": 2, "reasons": [999]},
    {"level": 4, "text": "x" * 501}, {"level": 4, "unknown": 1}, {"level": 2, "reasons": ["213"]},
])
async def test_malformed_ratings_are_refused(client, world, payload):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", json=payload)
    assert resp.status == 422 and (await resp.json())["error"]["message"]
    assert await count(client, Evaluation) == 0


@pytest.mark.parametrize("level", ["'; DROP TABLE evaluation;--", "²", "٣", "5" * 20, ""])
async def test_form_with_garbage_level_is_refused(client, world, level):
    token = await _token(client, world)
    resp = await client.post(f"/r/{token}", data={"level": level, "reasons": ["²"]})
    assert resp.status == 422 and await count(client, Evaluation) == 0


async def test_batch_rating_applies_to_every_case(client, world):
    await report(client, world, case_no="B-1", batch_no="BATCH-1")
    token = (await report(client, world, case_no="B-2", batch_no="BATCH-1"))["invitation"]["token"]
    page = await (await client.get(f"/r/{token}")).text()
    assert "批量办理" in page and "共 2 笔" in page
    assert (await client.post(f"/r/{token}", json={"level": 5})).status == 201
    listing = await (await client.get("/api/v1/evaluations", headers=world.auth("hanbin-market"))).json()
    assert [item["applies_to"] for item in listing["items"]] == [["B-1", "B-2"]]
    assert (await client.post(f"/r/{token}", json={"level": 4, "case_no": "B-1"})).status == 422


async def test_theme_rated_as_a_whole_covers_all_items(client, world):
    await report(client, world, case_no="T-1", theme_no="TH-1", item_name="营业执照")
    token = (await report(client, world, case_no="T-2", theme_no="TH-1", item_name="税务登记", item_code="TAX"))["invitation"]["token"]
    page = await (await client.get(f"/r/{token}")).text()
    assert "分别评价" in page and "?item=T-2" in page
    assert (await client.post(f"/r/{token}", json={"level": 4})).status == 201
    assert (await client.post(f"/r/{token}", json={"level": 4, "case_no": "T-1"})).status == 409
    listing = await (await client.get("/api/v1/evaluations", headers=world.auth("hanbin"))).json()
    assert listing["items"][0]["applies_to"] == ["T-1", "T-2"]


async def test_theme_rated_item_by_item(client, world):
    await report(client, world, case_no="T-1", theme_no="TH-2", item_name="营业执照")
    token = (await report(client, world, case_no="T-2", theme_no="TH-2", item_name="税务登记", item_code="TAX"))["invitation"]["token"]
    assert (await client.post(f"/r/{token}", json={"level": 5, "case_no": "T-1"})).status == 201
    assert (await client.post(f"/r/{token}", json={"level": 5, "case_no": "T-1"})).status == 409  # once per item
    assert (await client.post(f"/r/{token}", json={"level": 3})).status == 409  # no whole rating after items
    resp = await client.post(f"/r/{token}", json={"level": 2, "case_no": "T-2", "reasons": [209]})
    assert resp.status == 201 and (await resp.json())["ticket_id"]
    assert (await client.post(f"/r/{token}", json={"level": 5, "case_no": "NOPE"})).status in (409, 422)
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(Invitation))).one().status == "rated"
    assert await count(client, Evaluation) == 2


async def test_evaluator_device_rates_on_the_citizens_behalf(client, world):
    token = await _token(client, world)
    resp = await client.post("/api/v1/evaluations", json={"token": token, "level": 4, "channel": "evaluator", "staff_level": 5},
                             headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 201 and body["channel"] == "evaluator" and body["staff_level"] == 5
    again = await client.post("/api/v1/evaluations", json={"token": token, "level": 1, "channel": "phone", "reasons": [115]},
                              headers=world.auth("hanbin"))
    assert again.status == 409
    assert (await _only(client, Evaluation)).submitted_by_org_id is not None


async def test_evaluator_of_another_county_may_not_rate(client, world):
    token = await _token(client, world)
    resp = await client.post("/api/v1/evaluations", json={"token": token, "level": 5, "channel": "evaluator"}, headers=world.auth("hanyin-market"))
    # Outside the caller's jurisdiction, as on every route: 404, the same answer as an unknown token.
    assert resp.status == 404 and await count(client, Evaluation) == 0
    unknown = await client.post("/api/v1/evaluations", json={"token": "A" * len(token), "level": 5, "channel": "evaluator"},
                                headers=world.auth("hanyin-market"))
    assert unknown.status == 404 and (await unknown.json()) == (await resp.json())
    resp = await client.post("/api/v1/evaluations", json={"token": token, "level": 5, "channel": "sms"}, headers=world.auth("hanbin-market"))
    assert resp.status == 422  # SMS ratings come from the SMS channel itself, not from the API


async def test_evaluation_list_is_scoped(client, world):
    token = await _token(client, world)
    await client.post(f"/r/{token}", json={"level": 5})
    for org, expected in (("hanbin-market", 1), ("hanbin", 1), ("city", 1), ("operator", 1), ("hanyin", 0), ("hanbin-tax", 0)):
        body = await (await client.get("/api/v1/evaluations", headers=world.auth(org))).json()
        assert len(body["items"]) == expected, org
    assert "phone" not in str(body) and "1381234" not in str(body)


async def test_evaluations_are_immutable(client, world):
    token = await _token(client, world)
    await client.post(f"/r/{token}", json={"level": 5})
    async with client.app[STORE].transaction() as session:
        evaluation = (await session.exec(select(Evaluation))).one()
    with pytest.raises(PermissionError):
        async with client.app[STORE].transaction() as session:
            evaluation = await session.get(Evaluation, evaluation.id)
            evaluation.level = 1
    for sql in ("UPDATE evaluation SET level = 1", "DELETE FROM evaluation"):
        with pytest.raises(Exception, match="immutable"):
            async with client.app[STORE].transaction() as session:
                await session.exec(text(sql))
    assert (await _only(client, Evaluation)).level == 5
