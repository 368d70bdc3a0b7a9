"""Which tickets a campaign takes: the caller's jurisdiction, the filters, an explicit list, and never a
ticket already in an open callback of the same round."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from gateway.store.models import CampaignTarget
from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from tests.fakes.twilio_api import AUTH_TOKEN, signed_form, status_callback_params
from tests.gateway.callbacks.conftest import Campaigns, flush, phone_number, rows, run_campaigns, surveys, targets
from tests.gateway.sms.conftest import PUBLIC


async def test_only_approval_departments_start_campaigns_within_their_jurisdiction(client, world, make_resolved, campaigns: Campaigns):
    hanbin = await make_resolved(phone=phone_number(1))
    hanyin = await make_resolved(phone=phone_number(2), org="hanyin-market", region="610921", approval="hanyin")

    county = await campaigns.started("hanbin")
    assert set(await targets(client, county["id"])) == {hanbin}
    for org in ("hanbin-market", "operator"):
        status, body = await campaigns.start(org)
        assert status == 403 and body["error"]["code"] == "forbidden", org

    # Another department's campaign is not there for it; the operator may read, not steer.
    for org in ("hanyin", "hanbin-market", "city"):
        status, body = await campaigns.get(county["id"], org)
        assert status == 404 and body["error"]["code"] == "not_found", org
    assert (await campaigns.get(county["id"], "operator"))[0] == 200
    for action in ("pause", "cancel"):
        assert (await campaigns.act(county["id"], action, org="hanyin"))[0] == 404
        assert (await campaigns.act(county["id"], action, org="operator"))[0] == 404
    assert (await campaigns.get(99_999))[0] == 404
    assert (await campaigns.get(10**12))[0] == 404

    # The city bureau reads the whole city but surveys only the tickets it holds itself (city-level
    # offices, Art. 14): the counties' tickets are their own departments' to call back.
    status, body = await campaigns.start("city")
    assert status == 422, body
    other = await campaigns.started("hanyin")
    assert set(await targets(client, other["id"])) == {hanyin}


async def test_filters(client, world, make_resolved, campaigns: Campaigns, clock):
    first_day = await make_resolved(phone=phone_number(1))  # resolved 2026-03-04 (local)
    clock.advance(days=1)
    second_day = await make_resolved(phone=phone_number(2), level=1)
    clock.advance(days=1)
    tax = await make_resolved(phone=phone_number(3), org="hanbin-tax")

    async def taken(**filters) -> set[int]:  # type: ignore[no-untyped-def]
        status, body = await campaigns.start(**filters)
        if status == 422 and body["error"]["code"] == "no_targets":
            return set()
        assert status == 201, body
        ids = set(await targets(client, body["id"]))
        assert (await campaigns.act(body["id"], "cancel"))[0] == 200  # frees the tickets for the next try
        return ids

    assert await taken(resolved_from="2026-03-05", resolved_to="2026-03-05") == {second_day}
    assert await taken(resolved_to="2026-03-04") == {first_day}
    assert await taken(resolved_from="2026-03-05") == {second_day, tax}
    assert await taken(level=1) == {second_day}
    assert await taken(unit="hanbin-tax") == {tax}
    assert await taken(region_code="610921") == set()
    assert await taken(region_code="610902", level=2) == {first_day, tax}
    status, body = await campaigns.start(unit="no-such-unit")
    assert status == 422 and body["error"]["field"] == "unit"
    status, body = await campaigns.start(resolved_from="2026-03-06", resolved_to="2026-03-05")
    assert status == 422
    status, body = await campaigns.start(starts_at="2026-03-05T09:00:00")  # no UTC offset
    assert status == 422 and body["error"]["field"] == "starts_at"


async def test_the_date_filters_take_whole_local_days(client, world, make_resolved, campaigns: Campaigns, clock):
    clock.set(datetime(2026, 3, 4, 16, 0, tzinfo=timezone.utc))  # 00:00 on 5 March in Asia/Shanghai
    at_midnight = await make_resolved(phone=phone_number(1))
    clock.set(datetime(2026, 3, 5, 15, 59, 59, tzinfo=timezone.utc))  # 23:59:59 on 5 March
    last_second = await make_resolved(phone=phone_number(2))

    async def taken(**filters) -> set[int]:  # type: ignore[no-untyped-def]
        status, body = await campaigns.start(**filters)
        if status == 422 and body["error"]["code"] == "no_targets":
            return set()
        assert status == 201, body
        ids = set(await targets(client, body["id"]))
        assert (await campaigns.act(body["id"], "cancel"))[0] == 200
        return ids

    assert await taken(resolved_from="2026-03-05", resolved_to="2026-03-05") == {at_midnight, last_second}
    assert await taken(resolved_to="2026-03-04") == set()
    assert await taken(resolved_from="2026-03-06") == set()


async def test_an_explicit_list_reports_what_it_did_not_take(client, world, make_resolved, campaigns: Campaigns, api, make_open_ticket):
    resolved = await make_resolved(phone=phone_number(1))
    other_county = await make_resolved(phone=phone_number(2), org="hanyin-market", region="610921", approval="hanyin")
    still_open = await make_open_ticket()
    body = await campaigns.started(ticket_ids=[resolved, other_county, still_open, 987_654, resolved])
    assert body["counts"]["targets"] == 1
    assert body["not_targeted"] == [other_county, still_open, 987_654]
    assert body["filters"] == {"ticket_ids_count": 4}
    read = await campaigns.read(body["id"])
    assert read["not_targeted"] is None and read["filters"] == {"ticket_ids_count": 4}


async def test_a_ticket_in_an_open_callback_is_not_asked_again(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    ticket_id = await make_resolved(phone=phone_number(1))
    await flush(client)
    first = await campaigns.started()
    status, body = await campaigns.start("city")  # pending in the first: taken
    assert status == 422 and body["error"]["code"] == "no_targets"
    await run_campaigns(client)
    status, body = await campaigns.start(ticket_ids=[ticket_id])  # sent, waiting for its answer
    assert status == 422

    # The SMS never arrived: the ticket may be surveyed again, in the same round.
    (message,) = await surveys(client)
    params = status_callback_params(message_sid=message.provider_message_id, status="undelivered", to=f"+86{phone_number(1)}", error_code=30005)
    headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
    await client.post("/webhooks/twilio/status", data=data, headers=headers)
    await run_campaigns(client)
    assert (await targets(client, first["id"]))[ticket_id].status == "failed"
    again = await campaigns.started(ticket_ids=[ticket_id])
    assert again["counts"]["targets"] == 1


async def test_two_campaigns_started_at_once_share_no_ticket(client, world, make_resolved, campaigns: Campaigns):
    tickets = {await make_resolved(phone=phone_number(i)) for i in range(1, 7)}
    answers = await asyncio.gather(campaigns.start("hanbin"), campaigns.start("city"))
    taken = [(status, body) for status, body in answers if status == 201]
    assert all(status in (201, 422) for status, _ in answers) and taken
    all_targets = await rows(client, CampaignTarget)
    assert sorted(t.ticket_id for t in all_targets) == sorted(tickets)  # each once, in one campaign or the other


async def test_a_scheduled_campaign_waits_for_its_start(client, world, make_resolved, campaigns: Campaigns, clock, fake_twilio):
    await make_resolved(phone=phone_number(1))
    await flush(client)
    later = clock.now() + timedelta(hours=2)
    created = await campaigns.started(starts_at=later.isoformat())
    assert created["status"] == "scheduled"
    await run_campaigns(client)
    assert await surveys(client) == []
    # Paused and resumed before its start, it waits for its start again.
    assert (await campaigns.act(created["id"], "pause"))[1]["status"] == "paused"
    assert (await campaigns.act(created["id"], "resume"))[1]["status"] == "scheduled"
    await run_campaigns(client)
    assert await surveys(client) == []
    clock.advance(hours=2)
    assert (await client.app[CAMPAIGN_FEEDER].run_once()).started == 1
    await run_campaigns(client)
    assert [m.status for m in await surveys(client)] == ["sent"]
    assert (await campaigns.read(created["id"]))["status"] == "running"


async def test_a_nul_character_anywhere_in_a_body_is_a_field_error(client, world, make_resolved, campaigns: Campaigns):
    from gateway.store.models import Campaign

    await make_resolved(phone=phone_number(1))
    status, body = await campaigns.start(name="\f\x00V\x07", level=2)
    assert status == 422 and body["error"]["field"] == "name" and "NUL" in body["error"]["message"]
    resp = await client.post("/api/v1/campaigns", json={"name": "x", "extra": {"deep": ["a", "b\x00"]}}, headers=world.auth("hanbin"))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "extra.deep.1"
    assert await rows(client, Campaign) == []  # nothing was started
    assert (await campaigns.start(name="\f回访 V", level=2))[0] == 201  # other control characters are the schema's business
