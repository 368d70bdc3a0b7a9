"""GET /api/v1/stats: counts and rates from the roll-ups, jurisdiction, grouping, and bad input."""

from __future__ import annotations

from typing import Any

from gateway.evaluations.records import record_written
from gateway.store.models import EvaluationDecision, Ticket
from gateway.web.keys import DEPS, STORE
from tests.conftest import World


async def _stats(client, world: World, org: str, **params: Any) -> tuple[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    resp = await client.get("/api/v1/stats", params={k: str(v) for k, v in params.items()}, headers=world.auth(org))
    return resp.status, await resp.json()


async def test_indicators_count_each_level_and_rates(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    for level in (5, 5, 4, 3, 2, 1):
        await rate(level)
    status, body = await _stats(client, world, "city", period="month", date="2026-03-04")
    assert status == 200, body
    total = body["total"]
    assert total["counts"] == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 2}
    assert total["valid"] == 6 and total["invited"] == 6 and total["participation_rate"] == 1.0
    assert total["good_rate"] == round(4 / 6, 4) and total["bad_rate"] == round(2 / 6, 4)
    assert total["satisfied_rate"] == 0.5
    assert total["satisfaction_mean"] == round(20 / 6, 3) and total["satisfaction_score"] == round(20 / 6 * 20, 1)
    # Both tickets fall due within March (10 working days), none closed yet.
    assert total["tickets_due"] == 2 and total["tickets_closed"] == 0 and total["rectification_rate"] == 0.0
    assert total["on_time_rate"] is None and total["callback_rate"] is None
    assert body["period"] == {"from": "2026-03-01", "to": "2026-03-31"}


async def test_a_ruling_moves_an_evaluation_out_of_the_figures_and_counts_it_apart(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(5)
    bad = await rate(1)
    app = client.app
    async with app[STORE].transaction() as session:
        ticket = await session.get(Ticket, bad["ticket_id"])
        assert ticket is not None
        decision = EvaluationDecision(evaluation_id=ticket.evaluation_id, decision="malicious", org_id=2, created_at=app[DEPS].clock.now())
        session.add(decision)
        await session.flush()
        await record_written(session, kind="decision", record=decision, deps=app[DEPS], at=decision.created_at)
        # A second ruling on the same evaluation does not count it twice.
        again = EvaluationDecision(evaluation_id=ticket.evaluation_id, decision="fraud", org_id=2, created_at=app[DEPS].clock.now())
        session.add(again)
        await session.flush()
        await record_written(session, kind="decision", record=again, deps=app[DEPS], at=again.created_at)
    status, body = await _stats(client, world, "operator")
    assert status == 200, body
    assert body["total"]["valid"] == 1 and body["total"]["counts"]["1"] == 0
    assert body["total"]["not_counted"] == {"malicious": 1}
    assert body["total"]["bad_rate"] == 0.0


async def test_jurisdiction_scopes_the_figures(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(5)  # 汉滨区, hanbin-market
    await rate(2, org="hanyin-market", region="610921")
    counts = {}
    for org in ("operator", "city", "hanbin", "hanyin", "hanbin-market", "hanbin-tax", "hanyin-market"):
        status, body = await _stats(client, world, org)
        assert status == 200, body
        counts[org] = body["total"]["valid"]
    assert counts == {"operator": 2, "city": 2, "hanbin": 1, "hanyin": 1, "hanbin-market": 1, "hanbin-tax": 0,
                      "hanyin-market": 1}
    # Another county's unit is not a filter a county department may use.
    status, body = await _stats(client, world, "hanbin", unit="hanyin-market")
    assert status == 422 and body["error"]["field"] == "unit"


async def test_grouping_by_unit_region_channel_and_reason(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(5)
    await rate(2, reasons=[213, 214])
    await rate(1, org="hanyin-market", region="610921", reasons=[112])
    status, body = await _stats(client, world, "city", group_by="region,unit")
    assert status == 200, body
    by_unit = {g["key"]["unit"]: g for g in body["groups"]}
    assert by_unit["hanbin-market"]["indicators"]["valid"] == 2
    assert by_unit["hanbin-market"]["label"]["region"] == "汉滨区"
    assert by_unit["hanyin-market"]["indicators"]["counts"]["1"] == 1
    status, body = await _stats(client, world, "city", group_by="reason_kind")
    kinds = {g["key"]["reason_kind"]: g["indicators"]["valid"] for g in body["groups"]}
    # A reason dimension counts mentions: 213 and 214 are both staff reasons of one evaluation.
    assert kinds == {"staff": 2, "platform": 1}
    assert body["total"]["valid"] == 3  # each evaluation once, whatever its reasons
    status, body = await _stats(client, world, "city", reason=213)
    assert body["total"]["valid"] == 1 and body["total"]["invited"] is None
    status, body = await _stats(client, world, "city", group_by="channel,week")
    rated = {(g["key"]["channel"], g["key"]["week"]) for g in body["groups"] if g["indicators"]["valid"]}
    assert rated == {("web", "2026-W10")}
    # Ticket figures are grouped by the week their tickets fall due.
    due = {g["key"]["week"] for g in body["groups"] if g["indicators"]["tickets_due"]}
    assert due == {"2026-W12"}


async def test_bad_input_is_a_422_naming_the_field(client, world: World) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ({"colour": "red"}, "colour"),
        ({"unit": "no-such-unit"}, "unit"),
        ({"region": "999999"}, "region"),
        ({"approval": "hanbin-market"}, "approval"),
        ({"from": "2026-03-10", "to": "2026-03-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "to"),
        ({"from": "2026-03-01"}, "to"),
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "month,week"}, "group_by"),
        ({"period": "fortnight"}, "period"),
        ({"reason": 999}, "reason"),
        ({"channel": "fax"}, "channel"),
        ({"date": "2026-02-30"}, "date"),
    ]
    for params, field in cases:
        status, body = await _stats(client, world, "city", **params)
        assert status == 422, (params, body)
        assert body["error"]["field"] == field, (params, body)
    resp = await client.get("/api/v1/stats")
    assert resp.status == 401


async def test_ticket_figures_follow_the_workflow(client, world: World, rate, clock) -> None:  # type: ignore[no-untyped-def]
    from tests.gateway.tickets.helpers import Api

    api = Api(client, world)
    first = await rate(2)
    second = await rate(1)
    await api.resolved(first["ticket_id"])
    await api.ok("hanbin", first["ticket_id"], "callback_result", outcome="satisfied")
    await api.in_progress(second["ticket_id"])
    status, body = await _stats(client, world, "hanbin", **{"from": "2026-03-01", "to": "2026-04-30"})
    assert status == 200, body
    total = body["total"]
    assert total["tickets_due"] == 2 and total["tickets_closed"] == 1 and total["rectification_rate"] == 0.5
    assert total["closed_on_time"] == 1 and total["on_time_rate"] == 1.0
    assert total["tickets_resolved"] == 1 and total["called_back"] == 1 and total["callback_rate"] == 1.0
    assert total["callback_satisfied"] == 1 and total["callback_satisfaction_rate"] == 1.0
    assert total["mean_working_days_to_rectify"] == 0.0  # resolved the day it was received (frozen clock)
    # The same figures from the tickets themselves (a grouping by channel reads them, not the ticket roll-ups).
    status, by_channel = await _stats(client, world, "hanbin", **{"from": "2026-03-01", "to": "2026-04-30"}, group_by="channel")
    assert status == 200, by_channel
    ticket_fields = [k for k in total if k.startswith(("tickets_", "closed_", "called_", "callback_", "on_time", "mean_"))]
    assert len(ticket_fields) >= 10
    assert {k: by_channel["total"][k] for k in ticket_fields} == {k: total[k] for k in ticket_fields}


async def test_working_days_to_rectify_count_the_calendar(client, world: World, rate, clock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Received on a Wednesday, resolved eight days later on a Thursday: the Thursday and Friday after receipt
    and Monday to Thursday of the next week count, the weekend does not: six working days. The same figure comes from the database's running count
    and, for a ticket outside its span, from the day pair counted by the gateway (both read the tickets
    themselves, as a grouping by channel does), and from the ticket roll-ups (the county's total)."""
    from datetime import timedelta

    import gateway.stats.queries as queries
    from tests.gateway.tickets.helpers import Api

    api = Api(client, world)
    rated = await rate(1)
    await api.in_progress(rated["ticket_id"])
    clock.advance(days=8)
    await api.ok("hanbin-market", rated["ticket_id"], "resolve", rectification="补正材料", reply="已整改，感谢监督。")
    received = clock.now() - timedelta(days=8)
    assert received.weekday() == 2, received  # the frozen clock stands on a Wednesday
    for margin in (timedelta(days=366), timedelta(days=0)):
        monkeypatch.setattr(queries, "WORKING_DAY_MARGIN", margin)
        # Due ten working days after receipt, on 2026-03-18: the range starts after the day of receipt.
        for grouping in ({}, {"group_by": "channel"}):
            status, body = await _stats(client, world, "hanbin", **{"from": "2026-03-15", "to": "2026-04-30"}, **grouping)
            assert status == 200, body
            assert body["total"]["tickets_resolved"] == 1, body["total"]
            assert body["total"]["mean_working_days_to_rectify"] == 6.0, (margin, grouping, body["total"])
