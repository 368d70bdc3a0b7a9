"""A theme ("一件事") across units: one invitation, one rating as a whole, routed to the approval department."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import select

from gateway.store.models import Invitation, Organisation, OutboundMessage, Ticket
from gateway.web.keys import STORE
from tests.conftest import case_payload
from tests.gateway.evaluations.helpers import count, report

def _theme(case_no: str, org_code: str, **overrides: Any) -> dict[str, Any]:
    return {"case_no": case_no, "theme_no": "YJS-OPEN-SHOP", "org_code": org_code, "staff_id": None, **overrides}

async def test_a_theme_across_units_is_one_invitation_rated_once(client, world):
    market = await report(client, world, "hanbin-market", **_theme("M-1", "hanbin-market", item_name="营业执照"))
    tax = await report(client, world, "hanbin-tax", **_theme("T-1", "hanbin-tax", item_name="税务登记", item_code="TAX-1"))
    assert market["invitation"]["token"] == tax["invitation"]["token"] and tax["invitation"]["kind"] == "theme"
    assert await count(client, Invitation) == 1
    async with client.app[STORE].transaction() as session:
        prompts = (await session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "prompt"))).all()
        owner = await session.get(Organisation, (await session.exec(select(Invitation))).one().org_id)
    assert len(prompts) == 1  # the citizen is asked once for the whole theme
    assert owner is not None and owner.code == "hanbin"  # the approval department coordinates the theme

    # Reporting a case again is still idempotent, from either unit.
    again = await report(
        client, world, "hanbin-tax", **_theme("T-1", "hanbin-tax", item_name="税务登记", item_code="TAX-1")
    )
    assert again["created"] is False and again["invitation"]["token"] == market["invitation"]["token"]

    token = market["invitation"]["token"]
    page = await (await client.get(f"/r/{token}")).text()
    assert "营业执照" in page and "税务登记" in page
    resp = await client.post(f"/r/{token}", json={"level": 1, "reasons": [113], "text": "两个部门来回跑"})
    assert resp.status == 201
    assert (await client.post(f"/r/{token}", json={"level": 5})).status == 409  # once, as a whole (Art. 11)

    ticket_id = (await resp.json())["ticket_id"]
    detail = await (await client.get(f"/api/v1/tickets/{ticket_id}", headers=world.auth("hanbin"))).json()
    assert detail["approval_org"]["code"] == "hanbin" and detail["unit_org"] is None
    assert detail["status"] == "dispatching" and detail["applies_to"] == ["M-1", "T-1"]
    assert set(detail["allowed_actions"]) >= {"transfer", "consult"}
    created = detail["events"][0]
    assert created["data"]["units"] == ["hanbin-market", "hanbin-tax"] and "consultation" in created["note"]

    # Both units find the theme's rating; the approval department may consult them both (会商).
    for unit in ("hanbin-market", "hanbin-tax"):
        listing = await (await client.get("/api/v1/evaluations", headers=world.auth(unit))).json()
        assert [i["applies_to"] for i in listing["items"]] == [["M-1", "T-1"]], unit
    consult = await client.post(
        f"/api/v1/tickets/{ticket_id}/actions", json={"action": "consult", "orgs": ["hanbin-market", "hanbin-tax"]},
        headers=world.auth("hanbin"),
    )
    assert consult.status == 200, await consult.text()

async def test_an_item_of_the_theme_may_still_be_rated_alone_and_goes_to_its_unit(client, world):
    token = (await report(client, world, "hanbin-market", **_theme("M-1", "hanbin-market")))["invitation"]["token"]
    await report(client, world, "hanbin-tax", **_theme("T-1", "hanbin-tax", item_code="TAX-1"))
    resp = await client.post(f"/r/{token}", json={"level": 2, "reasons": [209], "case_no": "T-1"})
    assert resp.status == 201
    async with client.app[STORE].transaction() as session:
        ticket = (await session.exec(select(Ticket))).one()
        unit = await session.get(Organisation, ticket.unit_org_id)
    assert unit is not None and unit.code == "hanbin-tax"

async def test_a_units_evaluator_may_rate_the_theme_it_took_part_in(client, world):
    token = (await report(client, world, "hanbin-market", **_theme("M-1", "hanbin-market")))["invitation"]["token"]
    await report(client, world, "hanbin-tax", **_theme("T-1", "hanbin-tax", item_code="TAX-1"))
    outsider = await client.post(
        "/api/v1/evaluations", json={"token": token, "level": 5, "channel": "evaluator"},
        headers=world.auth("hanyin-market"),
    )
    assert outsider.status == 404  # another county's link: not found, as on every other route
    resp = await client.post(
        "/api/v1/evaluations", json={"token": token, "level": 5, "channel": "evaluator"},
        headers=world.auth("hanbin-tax"),
    )
    assert resp.status == 201 and (await resp.json())["applies_to"] == ["M-1", "T-1"]

async def test_the_same_case_number_from_two_units_of_one_theme_is_refused(client, world):
    await report(client, world, "hanbin-market", **_theme("X-1", "hanbin-market"))
    resp = await client.post(
        "/api/v1/cases", json=_case(_theme("X-1", "hanbin-tax", item_code="TAX-1")), headers=world.auth("hanbin-tax")
    )
    body = await resp.json()
    assert resp.status == 409 and body["error"]["field"] == "case_no", body
    assert await count(client, Invitation) == 1

async def test_a_theme_in_another_county_is_another_invitation(client, world):
    here = await report(client, world, "hanbin-market", **_theme("M-1", "hanbin-market"))
    there = await report(client, world, "hanyin-market", **_theme("M-1", "hanyin-market", region_code="610921"))
    assert here["invitation"]["token"] != there["invitation"]["token"]

async def test_concurrent_reports_of_one_theme_by_two_units_join_one_invitation(client, world):
    answers = await asyncio.gather(
        client.post("/api/v1/cases", json=_case(_theme("M-1", "hanbin-market")), headers=world.auth("hanbin-market")),
        client.post(
            "/api/v1/cases", json=_case(_theme("T-1", "hanbin-tax", item_code="TAX-1")),
            headers=world.auth("hanbin-tax"),
        ),
    )
    bodies = [await a.json() for a in answers]
    assert [a.status for a in answers] == [201, 201], bodies
    assert len({b["invitation"]["token"] for b in bodies}) == 1
    async with client.app[STORE].transaction() as session:
        assert len((await session.exec(select(Invitation))).all()) == 1
        assert len((await session.exec(select(OutboundMessage))).all()) == 1

def _case(overrides: dict[str, Any]) -> dict[str, Any]:
    return case_payload(**overrides)
