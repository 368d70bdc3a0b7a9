"""Effects of actions: the reply reaching the evaluator, the appeal ruling on the rating, concurrency, the
service entry point for callback campaigns, and input errors that say what to do."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from gateway.store.models import Evaluation, EvaluationDecision, OutboundMessage, Ticket
from gateway.tickets.actions import CALLBACK_CAMPAIGN, apply_action, record_callback_result
from gateway.tickets.errors import Forbidden, TransitionNotAllowed
from gateway.tickets.schemas import Transfer
from gateway.tickets.workflow import SystemActor
from gateway.web.keys import DEPS, DISPATCHER, STORE
from tests.conftest import sent_messages
from tests.gateway.tickets.helpers import Api

REPLY = "您反映的窗口人员业务不熟练问题已核实，已组织专项培训并调整岗位。"


async def test_the_evaluator_receives_the_reply(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    ticket = await api.ok("hanbin-market", ticket_id, "resolve", rectification="window staff retrained", reply=REPLY)
    assert ticket["status"] == "resolved" and ticket["reply_text"] == REPLY
    assert ticket["assignee_org"]["code"] == "hanbin"  # the approval department runs the callback next
    event = ticket["events"][-1]
    assert event["data"]["reply_channel"] == "sms" and event["data"]["rectification"] == "window staff retrained"
    async with client.app[STORE].transaction() as session:
        message = await session.get(OutboundMessage, event["data"]["message_id"])
    assert message is not None
    assert message.ticket_id == ticket_id and message.purpose == "notice" and message.status == "queued"
    assert message.dedupe_key == f"ticket-reply:{ticket_id}:1"
    assert REPLY in message.body and "个体工商户设立登记" in message.body

    while await client.app[DISPATCHER].run_once():
        pass
    replies = [m for m in sent_messages(client) if REPLY in m.body]
    assert len(replies) == 1
    assert replies[0].to == "+8613812341234" and replies[0].channel == "sms"


async def test_a_too_long_sms_reply_is_refused_with_its_limit(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    status, body = await api.act("hanbin-market", ticket_id, "resolve", rectification="done", reply="整" * 200)
    assert status == 422 and body["error"]["field"] == "reply"
    limit = body["error"]["details"]["max_length"]
    assert f"shorten it to at most {limit} characters" in body["error"]["message"]
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply="整" * limit)


async def test_an_unreachable_evaluator_is_noted_on_the_event(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket(citizen={"telegram_chat_id": 77})  # the bot is not configured in tests
    await api.in_progress(ticket_id)
    ticket = await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply="已整改。")
    assert ticket["events"][-1]["data"]["reply_channel"] is None
    async with client.app[STORE].transaction() as session:
        rows = (await session.exec(select(OutboundMessage).where(OutboundMessage.ticket_id == ticket_id))).all()
    assert rows == []


async def test_a_redo_round_sends_a_second_reply(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.resolved(ticket_id)
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied")
    await api.ok("hanbin", ticket_id, "redo", reason="not addressed")
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="again", reply="已再次整改。")
    async with client.app[STORE].transaction() as session:
        keys = (await session.exec(select(OutboundMessage.dedupe_key).where(OutboundMessage.ticket_id == ticket_id))).all()
    assert sorted(keys) == [f"ticket-reply:{ticket_id}:1", f"ticket-reply:{ticket_id}:2"]


@pytest.mark.parametrize("decision", ["invalid", "malicious"])
async def test_an_invalid_review_stops_counting_but_stays_stored(decision: str, api: Api, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    ticket = await api.ok("hanbin-market", ticket_id, "appeal", grounds="malicious", evidence="rated by the staff's rival")
    assert ticket["status"] == "appealed" and ticket["assignee_org"]["code"] == "hanbin"
    status, body = await api.act("hanbin", ticket_id, "decide_appeal", decision=decision)
    assert status == 422 and "needs a reason" in body["error"]["message"]
    ticket = await api.ok("hanbin", ticket_id, "decide_appeal", decision=decision, reason="verified with the CCTV log")
    assert ticket["status"] == "closed_invalid" and ticket["closed_at"] is not None
    assert ticket["evaluation"]["counts"] is False and ticket["evaluation"]["level"] == 2
    async with client.app[STORE].transaction() as session:
        decisions = (await session.exec(select(EvaluationDecision))).all()
        evaluation = await session.get(Evaluation, ticket["evaluation"]["id"])
    assert [(d.decision, d.ticket_id, d.note) for d in decisions] == [(decision, ticket_id, "verified with the CCTV log")]
    assert evaluation is not None and evaluation.level == 2 and evaluation.reason_codes == [213]
    resp = await client.get("/api/v1/evaluations", headers=world.auth("hanbin"))
    listed = (await resp.json())["items"]
    assert [(e["id"], e["counts"]) for e in listed] == [(evaluation.id, False)]


async def test_a_valid_review_sends_the_ticket_back_to_work(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    await api.ok("hanbin-market", ticket_id, "appeal", grounds="mistaken", evidence="the case was handled by another office")
    ticket = await api.ok("hanbin", ticket_id, "decide_appeal", decision="valid")
    assert ticket["status"] == "in_progress" and ticket["assignee_org"]["code"] == "hanbin-market"
    assert ticket["evaluation"]["counts"] is True
    async with client.app[STORE].transaction() as session:
        assert (await session.exec(select(EvaluationDecision))).all() == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("hanbin-market", {"action": "accept", "category": "simple"}), ("hanbin-market", {"action": "accept", "category": "general"})),
        (
            ("hanbin-market", {"action": "appeal", "grounds": "mistaken", "evidence": "another office's case"}),
            ("hanbin-market", {"action": "resolve", "rectification": "done", "reply": "已整改。"}),
        ),
        (("hanbin", {"action": "consult", "orgs": ["hanbin-tax"]}), ("hanbin", {"action": "consult", "orgs": ["city-police"]})),
    ],
)
async def test_two_concurrent_actions_exactly_one_wins(first, second, api: Api, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    if first[1]["action"] != "accept":
        await api.ok("hanbin-market", ticket_id, "accept")
    before = await api.ticket("hanbin", ticket_id)

    async def post(org: str, body: dict) -> tuple[int, dict]:
        resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", json=body, headers=world.auth(org))
        return resp.status, await resp.json()

    results = await asyncio.gather(post(*first), post(*second))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409], results
    after = await api.ticket("hanbin", ticket_id)
    assert after["version"] == before["version"] + 1
    assert len(after["events"]) == len(before["events"]) + 1


async def test_decisions_racing_on_one_request_only_one_lands(api: Api, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=3, reason="joint inspection")
    bodies = [{"action": "decide_extension", "decision": "approve"}, {"action": "decide_extension", "decision": "deny"}]
    responses = await asyncio.gather(
        *(client.post(f"/api/v1/tickets/{ticket_id}/actions", json=b, headers=world.auth("hanbin")) for b in bodies)
    )
    assert sorted(r.status for r in responses) == [200, 409]
    ticket = await api.ticket("hanbin", ticket_id)
    decisions = [e for e in ticket["events"] if e["action"] == "decide_extension"]
    assert len(decisions) == 1


async def test_a_stale_expected_version_is_refused(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    seen = await api.ticket("hanbin", ticket_id)
    await api.ok("hanbin", ticket_id, "consult", orgs=["hanbin-tax"], expected_version=seen["version"])
    status, body = await api.act("hanbin", ticket_id, "transfer", expected_version=seen["version"])
    assert status == 409 and body["error"]["code"] == "stale_ticket"
    assert body["error"]["details"]["version"] == seen["version"] + 1


async def test_callback_campaigns_record_answers_through_the_service(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    done, pending, other = await make_ticket(), await make_ticket(), await make_ticket()
    await api.resolved(done)
    await api.resolved(other)
    deps = client.app[DEPS]
    async with client.app[STORE].transaction() as session:
        event = await record_callback_result(
            session, ticket_id=done, outcome="unsatisfied", deps=deps, answer="办事还是慢", channel="sms", campaign_id=7
        )
        # A refused answer leaves nothing behind, even when the campaign catches it and carries on.
        with pytest.raises(TransitionNotAllowed):
            await record_callback_result(session, ticket_id=pending, outcome="satisfied", deps=deps)
        with pytest.raises(Forbidden):
            await apply_action(session, ticket_id=pending, action=Transfer(action="transfer"), actor=CALLBACK_CAMPAIGN, deps=deps)
        await record_callback_result(session, ticket_id=other, outcome="no_answer", deps=deps, campaign_id=7)
    assert event.actor == "system:callback-campaign" and event.actor_org_id is None
    assert event.data == {"outcome": "unsatisfied", "answer": "办事还是慢", "channel": "sms", "campaign_id": 7}
    ticket = await api.ticket("hanbin", done)
    assert ticket["status"] == "callback_unsatisfied" and "redo" in ticket["allowed_actions"]
    assert (await api.ticket("hanbin", pending))["status"] == "dispatching"
    assert (await api.ticket("hanbin", pending))["version"] == 1
    closed = await api.ticket("hanbin", other)
    assert closed["status"] == "closed_no_answer" and closed["closed_at"] is not None


async def test_a_system_actor_acting_for_a_department_is_recorded_with_it(api: Api, make_ticket, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.resolved(ticket_id)
    async with client.app[STORE].transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        actor = SystemActor("callback-campaign", org_id=ticket.approval_org_id)
        event = await record_callback_result(session, ticket_id=ticket_id, outcome="satisfied", deps=client.app[DEPS], actor=actor)
    assert event.actor_org_id == ticket.approval_org_id
    shown = await api.ticket("hanbin", ticket_id)
    assert shown["status"] == "closed_satisfied"
    assert shown["events"][-1]["actor_org"] == "hanbin"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"action": "launch"}, "action", "action must be one of: transfer, accept, classify"),
        ({}, "action", "action must be one of"),
        ({"action": 3}, "action", "action must be one of"),
        ({"action": "appeal", "grounds": "mistaken"}, "evidence", "appeal: evidence: Field required"),
        ({"action": "appeal", "grounds": "mistaken", "evidence": "   "}, "evidence", "at least 1 character"),
        ({"action": "accept", "category": "urgent"}, "category", "'simple' or 'general'"),
        ({"action": "accept", "status": "closed_satisfied"}, "status", "Extra inputs are not permitted"),
        ({"action": "request_extension", "working_days": 6, "reason": "x"}, "working_days", "less than or equal to 5"),
        ({"action": "request_extension", "working_days": "3", "reason": "x"}, "working_days", "valid integer"),
        ({"action": "resolve", "rectification": "done"}, "reply", "Field required"),
        ({"action": "consult", "orgs": []}, "orgs", "at least 1 item"),
        ({"action": "decide_extension", "decision": "deny", "working_days": 2}, None, "only given when approving"),
    ],
)
async def test_bad_bodies_name_the_field(body: dict, field: str | None, words: str, make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", json=body, headers=world.auth("hanbin-market"))
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["error"]["code"] == "invalid"
    assert answer["error"].get("field") == field
    assert words in answer["error"]["message"]


async def test_malformed_requests_and_unknown_ids(make_ticket, client, world) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    auth = world.auth("hanbin")
    resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", data="{", headers={**auth, "Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", data="action=transfer", headers=auth)
    assert resp.status == 415
    for path in ("/api/v1/tickets/0", "/api/v1/tickets/99999999999999999999", "/api/v1/tickets/2147483648"):
        resp = await client.get(path, headers=auth)
        assert resp.status == 404, path
    resp = await client.post("/api/v1/tickets/424242/actions", json={"action": "transfer"}, headers=auth)
    assert resp.status == 404


async def _org_ids(client):  # type: ignore[no-untyped-def]
    from sqlmodel import select

    from gateway.store.models import Organisation
    from gateway.web.keys import STORE

    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(Organisation.id, Organisation.code))).all())


async def test_history_records_every_step_with_actor_and_time(api: Api, make_ticket, clock, client) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    steps = [
        ("hanbin", "transfer", {}),
        ("hanbin-market", "accept", {}),
        ("hanbin-market", "classify", {"category": "simple"}),
        ("hanbin-market", "contact", {"method": "phone", "outcome": "explained the new procedure", "note": "called at once"}),
        ("hanbin-market", "resolve", {"rectification": "procedure fixed", "reply": "已整改。"}),
        ("hanbin", "callback_result", {"outcome": "satisfied", "channel": "phone"}),
    ]
    for org, action, body in steps:
        clock.advance(hours=1)
        await api.ok(org, ticket_id, action, **body)
    ticket = await api.ticket("hanbin", ticket_id)
    events = ticket["events"]
    assert [e["action"] for e in events] == ["created"] + [a for _, a, _ in steps]
    # The first event says what the rating opened: the evaluation, the route and the due time.
    assert {k: v for k, v in events[0].items() if k not in ("id", "at", "actor", "data")} == {
        "actor_org": None, "action": "created", "from_status": None, "to_status": "dispatching",
        "note": "handled by the unit that handled the case",
    }
    ids = {code: i for i, code in await _org_ids(client)}
    assert events[0]["data"] == {
        "evaluation_id": ticket["evaluation"]["id"], "level": 2, "reasons": [213],
        "approval_org_id": ids["hanbin"], "proposed_unit_org_id": ids["hanbin-market"], "responsibility": "handling",
        "units": ["hanbin-market"], "due_at": "2026-03-18T16:00:00+00:00", "due_provisional": False,
    }
    assert [e["actor"] for e in events] == ["system"] + [o for o, _, _ in steps]  # the rating opened it
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:]))
    assert all(t.tzinfo == timezone.utc for t in times)
    assert events[4]["note"] == "called at once" and events[4]["data"]["method"] == "phone"
    # Each step's words are on its record, as given.
    for event, (_, action, body) in zip(events[1:], steps):
        given = {k: v for k, v in body.items() if k != "note"}
        assert {k: event["data"].get(k) for k in given} == given, action
    assert events[5]["data"]["round"] == 1
    assert ticket["status"] == "closed_satisfied" and ticket["closed_at"] == events[-1]["at"]


async def test_a_reply_resolved_at_night_waits_for_morning(api: Api, make_ticket, client, clock) -> None:  # type: ignore[no-untyped-def]
    """docs/tickets.md: the unit's reply to the citizen keeps quiet hours, like every notice."""
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    clock.set(datetime(2026, 3, 4, 14, 30, tzinfo=timezone.utc))  # 22:30 Asia/Shanghai
    ticket = await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply=REPLY)
    async with client.app[STORE].transaction() as session:
        message = await session.get(OutboundMessage, ticket["events"][-1]["data"]["message_id"])
    assert message is not None and message.purpose == "notice"
    morning = datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc)  # 08:00 Asia/Shanghai
    assert message.not_before is not None and message.not_before.replace(tzinfo=timezone.utc) == morning
    while await client.app[DISPATCHER].run_once():
        pass
    assert not [m for m in sent_messages(client) if REPLY in m.body]
    clock.set(morning)
    while await client.app[DISPATCHER].run_once():
        pass
    assert len([m for m in sent_messages(client) if REPLY in m.body]) == 1
