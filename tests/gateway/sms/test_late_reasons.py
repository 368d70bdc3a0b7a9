"""Reasons given after a bad SMS rating: accepted for 48 hours (Art. 8), and they re-route a ticket that
has not been transferred yet when they are all about the platform (谁建设、谁负责)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from gateway.dialogue import conversation_key
from gateway.store.models import Citizen, EvaluationAddendum, Organisation, Ticket, TicketEvent
from gateway.web.keys import DEPS, DISPATCHER, STATE_STORE, STORE
from tests.gateway.evaluations.helpers import report


async def _rows(client, model, *where):  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(model).where(*where))).all())


async def _rated_two(client, world, phone) -> Ticket:  # type: ignore[no-untyped-def]
    await report(client, world, service_channel="online", staff_id=None)
    while await client.app[DISPATCHER].run_once():
        pass
    await phone.text("2")  # a bad rating, no reasons yet: the ticket exists already
    (ticket,) = await _rows(client, Ticket)
    return ticket


async def _forget_the_conversation(client) -> None:  # type: ignore[no-untyped-def]
    """The conversation state is gone (expired, or the process lost it): only the window still applies."""
    (citizen,) = await _rows(client, Citizen)
    await client.app[STATE_STORE].delete(conversation_key(client.app[DEPS], "sms", citizen.id))


@pytest.mark.parametrize(("hours", "kept"), [(47, True), (49, False)])
async def test_late_reasons_are_taken_within_48_hours_only(hours, kept, client, world, phone, clock):  # type: ignore[no-untyped-def]
    await _rated_two(client, world, phone)
    await _forget_the_conversation(client)
    clock.advance(hours=hours)
    await phone.text("1 3 材料清单没给")
    addenda = await _rows(client, EvaluationAddendum)
    if kept:
        (addendum,) = addenda
        assert addendum.reason_codes == [207, 209] and addendum.content == "材料清单没给"
    else:
        assert addenda == []


async def test_platform_reasons_reroute_an_untransferred_ticket(client, world, phone):  # type: ignore[no-untyped-def]
    ticket = await _rated_two(client, world, phone)
    assert ticket.status == "dispatching" and ticket.responsibility == "handling"
    await phone.text("5")  # 承诺网办但无法在线办理: a platform reason
    (ticket,) = await _rows(client, Ticket)
    (builder,) = await _rows(client, Organisation, Organisation.code == "platform")
    assert (ticket.unit_org_id, ticket.responsibility) == (builder.id, "platform")
    event = (await _rows(client, TicketEvent, TicketEvent.action == "reasons_added"))[-1]
    assert event.data == {
        "reasons": [211],
        "text": "",
        "proposed_unit_org_id": builder.id,
        "responsibility": "platform",
        "route_note": "reasons concern the platform: its builder handles it",
    }
    assert (event.actor, event.from_status, event.to_status) == ("citizen", "dispatching", "dispatching")
    assert event.note == "the evaluator gave the reasons for the bad rating"


async def test_mixed_reasons_keep_the_handling_unit(client, world, phone):  # type: ignore[no-untyped-def]
    before = await _rated_two(client, world, phone)
    await phone.text("1 5 材料清单没给")  # one platform reason, one of the unit's
    (ticket,) = await _rows(client, Ticket)
    assert (ticket.unit_org_id, ticket.responsibility) == (before.unit_org_id, "handling")
    # The route is unchanged, so the event proposes nothing: the citizen's reasons and words only.
    (event,) = await _rows(client, TicketEvent, TicketEvent.action == "reasons_added")
    assert event.data == {"reasons": [207, 211], "text": "材料清单没给"}


async def test_a_transferred_ticket_is_not_rerouted(client, world, phone):  # type: ignore[no-untyped-def]
    before = await _rated_two(client, world, phone)
    resp = await client.post(
        f"/api/v1/tickets/{before.id}/actions", json={"action": "transfer", "unit": "hanbin-market"},
        headers=world.auth("hanbin"),
    )
    assert resp.status == 200, await resp.json()
    await phone.text("5")
    (ticket,) = await _rows(client, Ticket)
    assert (ticket.unit_org_id, ticket.responsibility, ticket.status) == (before.unit_org_id, "handling", "transferred")

