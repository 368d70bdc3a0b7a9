"""Who may see and act on a ticket (属地管理、分级负责, Art. 13-14; DESIGN §5): 404 for what a caller must not
see, 403 for what it sees but may not do; and the logged read of the evaluator's number (Art. 16(四))."""

from __future__ import annotations

from sqlmodel import select

from gateway.orgs import org_by_code
from gateway.store.models import ContactAccess
from gateway.web.keys import STORE
from tests.gateway.tickets.helpers import Api


async def test_a_county_department_neither_sees_nor_acts_on_another_countys_tickets(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()  # 汉滨区
    status, body = await api.get("hanyin", ticket_id)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert body["error"]["message"] == f"ticket {ticket_id} does not exist or is outside your jurisdiction"
    status, body = await api.act("hanyin", ticket_id, "transfer", unit="hanyin-market")
    assert status == 404
    _, page = await api.list("hanyin")
    assert page["items"] == []
    # The answer for another county's ticket is the same as for a ticket that does not exist.
    status, missing = await api.get("hanyin", 999_999)
    assert status == 404 and missing["error"]["code"] == body["error"]["code"]


async def test_a_county_department_transfers_only_within_its_county(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    status, body = await api.act("hanbin", ticket_id, "transfer", unit="hanyin-market")
    assert status == 403 and body["error"]["field"] == "unit"
    assert "outside the jurisdiction" in body["error"]["message"]
    status, body = await api.act("hanbin", ticket_id, "transfer", unit="city-police")
    assert status == 403
    status, body = await api.act("hanbin", ticket_id, "transfer", unit="no-such-unit")
    assert status == 422 and body["error"]["field"] == "unit"
    status, body = await api.act("hanbin", ticket_id, "transfer", unit="hanbin")
    assert status == 422 and "not a handling unit" in body["error"]["message"] and body["error"]["field"] == "unit"
    ticket = await api.ok("hanbin", ticket_id, "transfer", unit="hanbin-tax")
    assert ticket["unit_org"]["code"] == "hanbin-tax" and ticket["assignee_org"]["code"] == "hanbin-tax"


async def test_a_county_may_hand_platform_reviews_to_the_city_platform_builder(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket(reasons=[211])  # 承诺网办但无法在线办理: the platform's builder (谁建设、谁负责)
    ticket = await api.ticket("hanbin", ticket_id)
    assert ticket["responsibility"] == "platform" and ticket["unit_org"]["code"] == "platform"
    ticket = await api.transferred(ticket_id)
    assert ticket["assignee_org"]["code"] == "platform"
    await api.ok("platform", ticket_id, "accept", category="general")


async def test_the_city_bureau_sees_county_tickets_but_does_not_act_on_them(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    assert (await api.ticket("city", ticket_id))["id"] == ticket_id
    status, body = await api.act("city", ticket_id, "transfer", unit="hanbin-market")
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert "only the approval department that holds this ticket" in body["error"]["message"]
    assert (await api.ticket("operator", ticket_id))["id"] == ticket_id
    status, _ = await api.act("operator", ticket_id, "transfer")
    assert status == 403


async def test_city_level_tickets_go_to_the_city_bureau(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket(org="city-police", region="610900")
    ticket = await api.ticket("city", ticket_id)
    assert ticket["approval_org"]["code"] == "city" and ticket["assignee_org"]["code"] == "city"
    status, _ = await api.get("hanbin", ticket_id)
    assert status == 404
    await api.ok("city", ticket_id, "transfer")
    await api.ok("city-police", ticket_id, "accept", category="simple")


async def test_a_unit_acts_only_on_its_own_tickets_and_only_as_a_unit(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    for other in ("hanbin-tax", "hanyin-market", "city-police"):
        status, _ = await api.get(other, ticket_id)
        assert status == 404, other
        status, _ = await api.act(other, ticket_id, "accept")
        assert status == 404, other
    status, body = await api.act("hanbin-market", ticket_id, "transfer", unit="hanbin-tax")
    assert status == 403 and "approval department" in body["error"]["message"]
    status, body = await api.act("hanbin", ticket_id, "accept")
    assert status == 403 and "handling unit" in body["error"]["message"]
    # Re-routed elsewhere, the first unit no longer sees it.
    await api.ok("hanbin", ticket_id, "transfer", unit="hanbin-tax")
    status, _ = await api.get("hanbin-market", ticket_id)
    assert status == 404
    assert (await api.ticket("hanbin-tax", ticket_id))["status"] == "transferred"


async def test_a_unit_cannot_rule_on_its_own_appeal_or_extension(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=2, reason="joint inspection")
    status, _ = await api.act("hanbin-market", ticket_id, "decide_extension", decision="approve")
    assert status == 403
    status, _ = await api.act("city", ticket_id, "decide_extension", decision="approve")
    assert status == 403  # Art. 15(一): the approval department of the same level


async def test_the_phone_number_is_masked_except_for_the_handling_unit(api: Api, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    ticket = await api.ticket("hanbin", ticket_id)
    assert ticket["citizen"] == {"phone_masked": "138****1234", "reachable_by": "sms"}
    assert "13812341234" not in str(ticket)

    async def contact(org: str) -> tuple[int, dict]:
        resp = await client.get(f"/api/v1/tickets/{ticket_id}/contact", headers=world.auth(org))
        return resp.status, await resp.json()

    status, body = await contact("hanbin-market")
    assert status == 403 and "not been transferred to your unit yet" in body["error"]["message"]
    await api.transferred(ticket_id)
    status, body = await contact("hanbin-market")
    assert status == 403 and "accept the ticket first" in body["error"]["message"]
    await api.ok("hanbin-market", ticket_id, "accept", category="simple")
    for org, expected in (("hanbin", 403), ("city", 403), ("operator", 403), ("hanyin", 404), ("hanbin-tax", 404)):
        status, _ = await contact(org)
        assert status == expected, org
    for _ in range(2):
        status, body = await contact("hanbin-market")
        assert status == 200
        assert body == {"ticket_id": ticket_id, "phone": "+8613812341234", "phone_masked": "138****1234"}
    async with client.app[STORE].transaction() as session:
        rows = (await session.exec(select(ContactAccess).where(ContactAccess.ticket_id == ticket_id))).all()
        unit = await org_by_code(session, "hanbin-market")
    assert len(rows) == 2 and {r.org_id for r in rows} == {unit.id}  # type: ignore[union-attr]
    await api.ok("hanbin-market", ticket_id, "contact", method="phone", outcome="已电话联系评价人")
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply="已整改。")
    status, body = await contact("hanbin-market")
    assert status == 403  # once resolved, the unit no longer needs the number


async def test_no_phone_number_to_read(api: Api, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket(citizen={"telegram_chat_id": 4242})
    await api.in_progress(ticket_id)
    resp = await client.get(f"/api/v1/tickets/{ticket_id}/contact", headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "no_contact"


async def test_requests_without_a_valid_key_are_refused_before_anything_else(client, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    for method, path in (
        ("GET", "/api/v1/tickets"), ("GET", f"/api/v1/tickets/{ticket_id}"),
        ("POST", f"/api/v1/tickets/{ticket_id}/actions"), ("GET", f"/api/v1/tickets/{ticket_id}/contact"),
    ):
        resp = await client.request(method, path, headers={"Authorization": "Bearer gk_000000000000_nope"})
        assert resp.status == 401, path
        resp = await client.request(method, path)
        assert resp.status == 401, path


async def test_a_reroute_starts_afresh_with_the_new_unit_and_says_so(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    first = await api.transferred(ticket_id)
    assert first["events"][-1]["data"]["unit"] == "hanbin-market" and "rerouted" not in first["events"][-1]["data"]
    await api.ok("hanbin-market", ticket_id, "accept", category="simple")
    status, body = await api.act("hanbin", ticket_id, "transfer", unit="hanbin-market")
    assert status == 409 and body["error"]["field"] == "unit" and "already with hanbin-market" in body["error"]["message"]
    ticket = await api.ok("hanbin", ticket_id, "transfer", unit="hanbin-tax")
    event = ticket["events"][-1]
    assert (event["data"]["unit"], event["data"]["rerouted"]) == ("hanbin-tax", True)
    assert ticket["category"] == "general" and ticket["status"] == "transferred"  # the new unit classifies afresh
