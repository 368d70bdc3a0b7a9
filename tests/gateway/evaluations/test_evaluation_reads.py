"""Reading evaluations as they stand now (original plus addenda), and finding a case's rating and ticket."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from gateway.evaluations.service import add_reasons, add_staff_rating
from gateway.store.models import Evaluation
from gateway.web.keys import DEPS, STORE
from tests.gateway.evaluations.helpers import report


async def _rate(client: Any, world: Any, case_no: str, body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    token = (await report(client, world, case_no=case_no, **overrides))["invitation"]["token"]
    resp = await client.post(f"/r/{token}", json=body)
    assert resp.status == 201, await resp.text()
    return {"token": token, **(await resp.json())}


async def _add_later(client: Any, evaluation_id: int, *, codes: list[int], text: str, staff_level: int | None) -> None:
    """What the conversation does when the citizen answers the follow-up questions."""
    deps = client.app[DEPS]
    async with client.app[STORE].transaction() as session:
        evaluation = (await session.exec(select(Evaluation).where(Evaluation.id == evaluation_id))).one()
        await add_reasons(session, evaluation=evaluation, codes=codes, text=text, channel="sms", deps=deps)
    deps.clock.advance(minutes=3)
    if staff_level is not None:
        async with client.app[STORE].transaction() as session:
            evaluation = (await session.exec(select(Evaluation).where(Evaluation.id == evaluation_id))).one()
            await add_staff_rating(session, evaluation=evaluation, staff_level=staff_level, channel="sms", deps=deps)


async def test_reasons_and_staff_rating_given_later_are_shown(client, world):
    rated = await _rate(client, world, "HB-1", {"level": 2, "text": "等了很久"})
    client.app[DEPS].clock.advance(minutes=2)
    await _add_later(client, rated["evaluation_id"], codes=[209, 213], text="电话 13812345678 联系我", staff_level=1)

    listing = await (await client.get("/api/v1/evaluations", headers=world.auth("hanbin-market"))).json()
    item = listing["items"][0]
    # The original stays as given ...
    assert (item["level"], item["reasons"], item["text"], item["staff_level"]) == (2, [], "等了很久", None)
    # ... the addenda follow, each with its time ...
    assert [(a["kind"], a["reasons"], a["staff_level"]) for a in item["addenda"]] == [
        ("reasons", [209, 213], None), ("staff", [], 1),
    ]
    first, second = (a["created_at"] for a in item["addenda"])
    assert item["created_at"] < first < second
    assert "13812345678" not in str(item) and "1381234****" not in str(item)
    # ... and "current" is the evaluation as it stands now.
    assert item["current"]["reasons"] == [209, 213]
    assert item["current"]["text"].startswith("等了很久\n电话 138****5678")
    assert item["current"]["staff_level"] == 1 and item["current"]["updated_at"] == second

    ticket = await (await client.get(f"/api/v1/tickets/{rated['ticket_id']}", headers=world.auth("hanbin"))).json()
    evaluation = ticket["evaluation"]
    assert evaluation["reasons"] == [] and [a["kind"] for a in evaluation["addenda"]] == ["reasons", "staff"]
    assert evaluation["current"] == item["current"] and ticket["applies_to"] == ["HB-1"]


async def test_an_evaluation_without_addenda_is_current_as_given(client, world):
    rated = await _rate(client, world, "HB-2", {"level": 1, "reasons": [115], "text": "态度差", "staff_level": 2})
    listing = await (await client.get("/api/v1/evaluations", headers=world.auth("hanbin"))).json()
    item = listing["items"][0]
    assert item["addenda"] == []
    assert item["current"] == {
        "reasons": [115], "text": "态度差", "staff_level": 2, "updated_at": item["created_at"],
    }
    assert item["id"] == rated["evaluation_id"]


async def test_find_a_cases_evaluation_and_ticket_by_case_no(client, world):
    bad = await _rate(client, world, "HB-10", {"level": 2, "reasons": [209]})
    good = await _rate(client, world, "HB-11", {"level": 5})
    await report(client, world, case_no="B-1", batch_no="BATCH-9")
    batch = await _rate(client, world, "B-2", {"level": 1, "reasons": [110]}, batch_no="BATCH-9")

    async def evaluations(org: str, **params: str) -> list[int]:
        resp = await client.get("/api/v1/evaluations", params=params, headers=world.auth(org))
        assert resp.status == 200, await resp.text()
        return [i["id"] for i in (await resp.json())["items"]]

    async def tickets(org: str, **params: str) -> list[int]:
        resp = await client.get("/api/v1/tickets", params=params, headers=world.auth(org))
        assert resp.status == 200, await resp.text()
        return [i["id"] for i in (await resp.json())["items"]]

    assert await evaluations("hanbin-market", case_no="HB-10") == [bad["evaluation_id"]]
    assert await evaluations("hanbin-market", case_no="HB-11") == [good["evaluation_id"]]
    assert await evaluations("hanbin", case_no="B-1") == [batch["evaluation_id"]]  # the batch's one rating covers B-1
    assert await evaluations("hanbin", token=good["token"]) == [good["evaluation_id"]]
    assert await evaluations("hanbin", case_no="NOPE") == []
    assert await evaluations("hanyin", case_no="HB-10") == []  # outside the jurisdiction: nothing
    assert await tickets("hanbin", case_no="HB-10") == [bad["ticket_id"]]
    assert await tickets("hanbin", case_no="B-1") == [batch["ticket_id"]]
    assert await tickets("hanbin", case_no="HB-11") == []
    assert await tickets("hanyin", case_no="HB-10") == []


async def test_bad_filters_are_refused_naming_the_field(client, world):
    for params, field in (({"case_no": "x y"}, "case_no"), ({"token": "short"}, "token"), ({"limit": "0"}, "limit"),
                          ({"before_id": "abc"}, "before_id"), ({"colour": "red"}, "colour")):
        resp = await client.get("/api/v1/evaluations", params=params, headers=world.auth("hanbin"))
        body = await resp.json()
        assert resp.status == 422 and body["error"]["field"] == field, body
    resp = await client.get("/api/v1/tickets", params={"case_no": "x y"}, headers=world.auth("hanbin"))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "case_no"


async def test_reasons_given_later_keep_a_thousand_characters_of_words_on_the_addendum_and_the_ticket(client, world):  # type: ignore[no-untyped-def]
    from gateway.store.models import EvaluationAddendum, TicketEvent

    rated = await _rate(client, world, "HB-1", {"level": 2, "text": "等了很久"})
    words = "材料清单没给" * 200  # 1,200 characters: the conversation cuts its text too, other callers may not
    await _add_later(client, rated["evaluation_id"], codes=[209], text=f"  {words}  ", staff_level=None)
    async with client.app[STORE].transaction() as session:
        (addendum,) = (await session.exec(select(EvaluationAddendum))).all()
        (event,) = (await session.exec(select(TicketEvent).where(TicketEvent.action == "reasons_added"))).all()
    assert addendum.content == words[:1000] and event.data["text"] == words[:1000]
