"""Deadlines in working days (Art. 15) through the API: receipt, categories, consultation, extension, redo,
across the 2026 Spring Festival and National Day (with their make-up working days), and the extension
and appeal windows at their exact edges."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.gateway.tickets.helpers import Api

UTC = timezone.utc
CST = timezone(timedelta(hours=8))
ONE_MICROSECOND = timedelta(microseconds=1)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def end_of(day: str) -> str:
    """The due instant of a local day (24:00 Asia/Shanghai) as the API writes it."""
    d = datetime.fromisoformat(day).replace(tzinfo=CST) + timedelta(days=1)
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_a_new_ticket_is_due_in_ten_working_days_from_creation(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()  # Wednesday 2026-03-04 10:00
    ticket = await api.ticket("hanbin", ticket_id)
    assert ticket["status"] == "dispatching" and ticket["assignee_org"]["code"] == "hanbin"
    assert ticket["due_local"] == "2026-03-18 24:00 Asia/Shanghai"
    assert ticket["due_at"] == end_of("2026-03-18") and ticket["due_provisional"] is False


async def test_a_new_ticket_due_in_a_year_without_a_schedule_says_its_due_time_is_provisional(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 12, 30, 10))  # ten working days reach into 2027, whose holidays are not known yet
    ticket = await api.ticket("hanbin", await make_ticket())
    assert ticket["due_local"].startswith("2027-01-") and ticket["due_provisional"] is True


async def test_the_units_receipt_starts_its_clock(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    clock.set(local(2026, 3, 6, 17, 30))  # transferred on Friday
    ticket = await api.transferred(ticket_id)
    assert ticket["received_at"] == "2026-03-06T09:30:00Z"
    assert ticket["due_local"] == "2026-03-20 24:00 Asia/Shanghai"
    assert ticket["assignee_org"]["code"] == "hanbin-market"


@pytest.mark.parametrize(
    ("received", "category", "due"),
    [
        # Spring Festival 2026: 02-14 (Saturday) and 02-28 (Saturday) are make-up working days.
        (local(2026, 2, 13, 10), "simple", "2026-02-27"),
        (local(2026, 2, 13, 10), "general", "2026-03-05"),
        # Mid-Autumn and National Day 2026: 10-01..10-07 off, Saturday 10-10 worked.
        (local(2026, 9, 30, 10), "simple", "2026-10-13"),
        (local(2026, 9, 30, 10), "general", "2026-10-20"),
        # Received late on a Saturday make-up day: the day of receipt itself never counts.
        (local(2026, 10, 10, 23, 59), "simple", "2026-10-16"),
    ],
)
async def test_category_deadlines_across_holidays(
    received: datetime, category: str, due: str, api: Api, make_ticket, clock  # type: ignore[no-untyped-def]
) -> None:
    clock.set(received - timedelta(hours=1))
    ticket_id = await make_ticket()
    clock.set(received)
    await api.transferred(ticket_id)
    ticket = await api.ok("hanbin-market", ticket_id, "accept", category=category)
    assert ticket["category"] == category
    assert ticket["due_local"] == f"{due} 24:00 Asia/Shanghai"
    assert ticket["due_at"] == end_of(due)


async def test_classifying_later_counts_from_receipt_not_from_classification(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 2, 13, 10))
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    await api.ok("hanbin-market", ticket_id, "accept")
    clock.set(local(2026, 2, 26, 9))
    ticket = await api.ok("hanbin-market", ticket_id, "classify", category="simple")
    assert ticket["due_local"] == "2026-02-27 24:00 Asia/Shanghai"


async def test_simple_is_refused_once_its_five_days_are_over(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 2, 13, 10))
    ticket_id = await make_ticket()
    await api.transferred(ticket_id)
    await api.ok("hanbin-market", ticket_id, "accept")
    clock.set(local(2026, 2, 28, 0))  # the instant the 5-day window ended
    status, body = await api.act("hanbin-market", ticket_id, "classify", category="simple")
    assert status == 422 and body["error"]["code"] == "deadline_passed" and body["error"]["field"] == "category"
    assert "until 2026-02-27 24:00 Asia/Shanghai" in body["error"]["message"]
    assert "classify it general" in body["error"]["message"]
    ticket = await api.ok("hanbin-market", ticket_id, "classify", category="general")  # as the refusal says
    assert ticket["category"] == "general" and ticket["status"] == "in_progress"


async def test_consultation_reply_is_due_fifteen_working_days_after_receipt(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 9, 30, 10))
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id, category="simple")
    ticket = await api.ok("hanbin", ticket_id, "consult", orgs=["hanbin-tax", "city-police"])
    assert ticket["consultation"] is True
    # 15 working days after 09-30: 10-08, 09, 10 (Sat), 12-16, 19-23, 26, 27.
    assert ticket["due_local"] == "2026-10-27 24:00 Asia/Shanghai"
    assert ticket["events"][-1]["data"]["orgs"] == ["hanbin-tax", "city-police"]
    status, body = await api.act("hanbin", ticket_id, "consult", orgs=["hanbin-tax"])
    assert status == 409


async def test_consultation_before_transfer_counts_from_creation(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()  # 2026-03-04
    ticket = await api.ok("hanbin", ticket_id, "consult", orgs=["hanbin-tax"])
    assert ticket["due_local"] == "2026-03-25 24:00 Asia/Shanghai"
    clock.set(local(2026, 3, 5, 10))
    ticket = await api.transferred(ticket_id)  # the unit's receipt restarts the 15 days
    assert ticket["due_local"] == "2026-03-26 24:00 Asia/Shanghai"
    status, body = await api.act("hanbin", ticket_id, "consult", orgs=["nobody-registered"])
    assert status == 409  # already consulting; an unknown org on a fresh ticket is 422 (below)
    other = await make_ticket()
    status, body = await api.act("hanbin", other, "consult", orgs=["nobody-registered"])
    assert status == 422 and body["error"]["field"] == "orgs"


async def test_extension_adds_working_days_to_the_due_date_once(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 2, 13, 10))
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)  # general: due 03-05
    clock.set(local(2026, 2, 25, 9))
    ticket = await api.ok("hanbin-market", ticket_id, "request_extension", working_days=5, reason="joint inspection needed")
    assert ticket["status"] == "extension_requested" and ticket["due_local"] == "2026-03-05 24:00 Asia/Shanghai"
    ticket = await api.ok("hanbin", ticket_id, "decide_extension", decision="approve", working_days=3)
    assert ticket["status"] == "in_progress" and ticket["extension_working_days"] == 3
    assert ticket["due_local"] == "2026-03-10 24:00 Asia/Shanghai"
    status, body = await api.act("hanbin-market", ticket_id, "request_extension", working_days=1, reason="again")
    assert status == 409 and "extended once" in body["error"]["message"]
    assert body["error"]["details"] == {"status": "in_progress"}


async def test_a_consultation_after_an_extension_keeps_the_extension(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 2, 13, 10))
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    clock.set(local(2026, 2, 25, 9))
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=5, reason="joint inspection needed")
    await api.ok("hanbin", ticket_id, "decide_extension", decision="approve", working_days=3)
    ticket = await api.ok("hanbin", ticket_id, "consult", orgs=["hanbin-tax"])
    # 15 working days after 02-13 end on 03-12 (03-05 is the 10th; 06, 09, 10, 11, 12), then the 3
    # approved days: 13, 16, 17.
    assert ticket["due_local"] == "2026-03-17 24:00 Asia/Shanghai"
    assert ticket["extension_working_days"] == 3


async def test_extension_grant_cannot_exceed_the_request(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=2, reason="waiting for a document")
    status, body = await api.act("hanbin", ticket_id, "decide_extension", decision="approve", working_days=4)
    assert status == 422 and body["error"]["field"] == "working_days"
    status, body = await api.act("hanbin", ticket_id, "decide_extension", decision="approve", working_days=6)
    assert status == 422  # the schema caps it at 5 (Art. 15(一))
    ticket = await api.ok("hanbin", ticket_id, "decide_extension", decision="approve")
    assert ticket["extension_working_days"] == 2 and ticket["due_local"] == "2026-03-20 24:00 Asia/Shanghai"


async def test_a_denied_extension_leaves_the_due_date_and_may_be_asked_again(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id)
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=2, reason="waiting for a document")
    ticket = await api.ok("hanbin", ticket_id, "decide_extension", decision="deny", reason="not complex enough")
    assert ticket["due_local"] == "2026-03-18 24:00 Asia/Shanghai" and ticket["extension_working_days"] == 0
    await api.ok("hanbin-market", ticket_id, "request_extension", working_days=1, reason="the document is late")


@pytest.mark.parametrize(
    ("action", "body", "window_end", "until"),
    [
        # Received 2026-02-13 10:00: 5 working days end 02-27 24:00 (02-14 is a make-up Saturday).
        ("request_extension", {"working_days": 2, "reason": "joint inspection"}, local(2026, 2, 28), "2026-02-27 24:00"),
        # 2 working days: 02-14 (make-up Saturday) and 02-24.
        ("appeal", {"grounds": "malicious", "evidence": "the same number rated 40 services today"}, local(2026, 2, 25), "2026-02-24 24:00"),
    ],
)
async def test_windows_at_their_exact_edges(
    action: str, body: dict, window_end: datetime, until: str, api: Api, make_ticket, clock  # type: ignore[no-untyped-def]
) -> None:
    clock.set(local(2026, 2, 13, 10))
    inside, outside = await make_ticket(), await make_ticket()
    for ticket_id in (inside, outside):
        await api.in_progress(ticket_id)
    clock.set(window_end - ONE_MICROSECOND)
    await api.ok("hanbin-market", inside, action, **body)
    clock.set(window_end)
    status, answer = await api.act("hanbin-market", outside, action, **body)
    assert status == 422, answer
    assert answer["error"]["code"] == "deadline_passed"
    message = answer["error"]["message"]
    assert f"(until {until} Asia/Shanghai)" in message
    assert f"this one came on {window_end.strftime('%Y-%m-%d %H:%M')}" in message
    assert answer["error"]["details"]["window_ends_at"] == window_end.astimezone(UTC).isoformat()


async def test_extension_window_message_names_the_dates(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()  # received 2026-03-04
    await api.in_progress(ticket_id)
    clock.set(local(2026, 3, 12, 9, 15))
    status, answer = await api.act("hanbin-market", ticket_id, "request_extension", working_days=2, reason="late")
    assert status == 422
    assert answer["error"]["message"] == (
        "extension requests are accepted within 5 working days of receipt (until 2026-03-11 24:00 Asia/Shanghai); "
        "this one came on 2026-03-12 09:15"
    )


async def test_redo_once_due_five_working_days_after_the_redo(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(local(2026, 9, 28, 10))
    ticket_id = await make_ticket()
    await api.resolved(ticket_id)
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied", answer="还是不满意", channel="phone")
    clock.set(local(2026, 9, 30, 16))
    ticket = await api.ok("hanbin", ticket_id, "redo", reason="the reply did not address the delay")
    assert ticket["status"] == "in_progress" and ticket["redo_count"] == 1
    assert ticket["assignee_org"]["code"] == "hanbin-market" and ticket["resolved_at"] is None
    assert ticket["due_local"] == "2026-10-13 24:00 Asia/Shanghai"  # 10-08, 09, 10 (Sat), 12, 13
    redo = ticket["events"][-1]
    assert (redo["action"], redo["data"]["reason"], redo["data"]["redo"]) == ("redo", "the reply did not address the delay", 1)
    # The redo period is not extended, and a second redo is refused.
    status, body = await api.act("hanbin-market", ticket_id, "request_extension", working_days=1, reason="more time")
    assert status == 409 and "not extended" in body["error"]["message"]
    status, body = await api.act("hanbin", ticket_id, "close", reason="too early")
    assert status == 409 and body["error"]["message"].endswith("the ticket is in_progress (it is being handled by the unit)")
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="fixed the queue", reply="已重新整改。")
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied")
    status, body = await api.act("hanbin", ticket_id, "redo", reason="still unsatisfied")
    assert status == 409
    assert body["error"]["message"] == "a ticket is sent back for a redo once only (Art. 15(五)); close it instead"
    ticket = await api.ok("hanbin", ticket_id, "close", reason="judged not the unit's fault")
    assert ticket["status"] == "closed_unsatisfied" and ticket["closed_at"] is not None
    assert "redo" not in ticket["allowed_actions"]
    assert ticket["events"][-1]["data"]["reason"] == "judged not the unit's fault"
    status, body = await api.act("hanbin", ticket_id, "close", reason="again")
    assert status == 409 and body["error"]["message"].endswith("the ticket is closed_unsatisfied (it is closed)")


async def test_overdue_from_the_due_instant(api: Api, make_ticket, clock) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    ticket = await api.in_progress(ticket_id, category="simple")  # due 2026-03-11 24:00
    due = datetime.fromisoformat(ticket["due_at"])
    clock.set(due - ONE_MICROSECOND)
    assert (await api.ticket("hanbin-market", ticket_id))["overdue"] is False
    clock.set(due)
    assert (await api.ticket("hanbin-market", ticket_id))["overdue"] is True
    await api.ok("hanbin-market", ticket_id, "contact", method="phone", outcome="已联系")
    ticket = await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply="已整改。")
    assert ticket["overdue"] is False
    assert ticket["events"][-1]["data"]["late"] is True


async def test_a_simple_ticket_is_resolved_only_after_contacting_the_evaluator(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    await api.in_progress(ticket_id, category="simple")
    status, body = await api.act("hanbin-market", ticket_id, "resolve", rectification="done", reply="已整改。")
    assert status == 409 and "contact" in body["error"]["message"]
    ticket = await api.ok("hanbin-market", ticket_id, "contact", method="phone", outcome="已电话联系评价人，说明整改安排")
    contact = ticket["events"][-1]
    assert (contact["data"]["method"], contact["data"]["outcome"]) == ("phone", "已电话联系评价人，说明整改安排")
    ticket = await api.ok("hanbin-market", ticket_id, "resolve", rectification="done", reply="已整改。")
    assert ticket["status"] == "resolved"


async def test_the_decisions_are_on_the_tickets_record(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    # The history says what was decided and why, and by how many days the due date moved (Art. 15).
    granted = await make_ticket()
    await api.in_progress(granted)
    await api.ok("hanbin-market", granted, "request_extension", working_days=5, reason="joint inspection needed")
    ticket = await api.ok("hanbin", granted, "decide_extension", decision="approve", working_days=3, reason="granted in part")
    [asked] = [e for e in ticket["events"] if e["action"] == "request_extension"]
    assert (asked["data"]["working_days"], asked["data"]["reason"]) == (5, "joint inspection needed")
    [event] = [e for e in ticket["events"] if e["action"] == "decide_extension"]
    assert {k: event["data"].get(k) for k in ("decision", "reason", "working_days")} == {
        "decision": "approve", "reason": "granted in part", "working_days": 3,
    }
    assert event["data"]["due_at"].replace("+00:00", "Z") == ticket["due_at"]
    assert event["data"]["due_before"] != event["data"]["due_at"]

    denied = await make_ticket()
    await api.in_progress(denied)
    await api.ok("hanbin-market", denied, "request_extension", working_days=2, reason="waiting for a document")
    ticket = await api.ok("hanbin", denied, "decide_extension", decision="deny", reason="the document is not needed")
    [event] = [e for e in ticket["events"] if e["action"] == "decide_extension"]
    assert event["data"]["decision"] == "deny" and event["data"]["reason"] == "the document is not needed"
    assert "working_days" not in event["data"]

    for decision in ("valid", "invalid"):
        appealed = await make_ticket()
        await api.in_progress(appealed)
        await api.ok("hanbin-market", appealed, "appeal", grounds="mistaken", evidence="handled by another office")
        ticket = await api.ok("hanbin", appealed, "decide_appeal", decision=decision, reason="checked the case file")
        [appeal] = [e for e in ticket["events"] if e["action"] == "appeal"]
        assert (appeal["data"]["grounds"], appeal["data"]["evidence"]) == ("mistaken", "handled by another office")
        [event] = [e for e in ticket["events"] if e["action"] == "decide_appeal"]
        assert (event["data"]["decision"], event["data"]["reason"]) == (decision, "checked the case file")


def test_an_extension_of_a_provisional_due_date_stays_provisional() -> None:
    from gateway.store.models import Ticket
    from gateway.tickets.calendar import Due, WorkingCalendar
    from gateway.tickets.workflow import current_due, extend

    cal = WorkingCalendar()
    firm = cal.due_at(local(2026, 3, 4, 10).astimezone(UTC), 10)
    assert not firm.provisional
    moved = extend(firm, 3, cal)
    assert moved.day == cal.add_working_days(firm.day, 3).day and moved.at == cal.end_of_day(moved.day)
    assert extend(Due(firm.at, firm.day, provisional=True), 3, cal).provisional  # a guess stays a guess
    ticket = Ticket(due_at=firm.at, due_provisional=True)
    assert current_due(ticket, cal) == Due(firm.at, firm.day, provisional=True)
