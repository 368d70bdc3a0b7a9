"""Ruling flags within jurisdiction; a confirmed good-review flag writes one decision and leaves the rating
as it was; the detector resumes from its cursor; the app's own pass finds flags; counts for statistics."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlmodel import select

from gateway.app import create_app
from gateway.clock import FrozenClock
from gateway.fraud.models import FraudCursor
from gateway.fraud.service import flag_counts
from gateway.store.models import Evaluation, EvaluationDecision
from gateway.web.keys import STORE
from tests.gateway.fraud.conftest import Seeder, detect, flags


async def _burst(
    seed: Seeder, clock: FrozenClock, phone: str, *, level: int = 5, org: str = "hanbin-market"
) -> list[int]:
    citizen = await seed.citizen(phone)
    start = clock.now() - timedelta(hours=1)
    return [
        await seed.rating(citizen_id=citizen, level=level, org=org, at=start + timedelta(minutes=n)) for n in range(5)
    ]


async def _rows(client, model, **where):  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        query = select(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return (await session.exec(query)).all()


async def test_listing_and_reading_follow_jurisdiction(client, world, seed: Seeder, clock) -> None:
    await _burst(seed, clock, "13800000041")
    await _burst(seed, clock, "13800000042", org="hanyin-market")
    await detect(client)
    hanbin_flag, hanyin_flag = [f.id for f, _ in await flags(client, "burst")]
    for org, visible in (
        ("hanbin", [hanbin_flag]),
        ("hanyin", [hanyin_flag]),
        ("city", [hanyin_flag, hanbin_flag]),
        ("operator", [hanyin_flag, hanbin_flag]),
    ):
        resp = await client.get("/api/v1/fraud/flags", headers=world.auth(org))
        assert resp.status == 200
        assert [f["id"] for f in (await resp.json())["items"]] == visible, org
    assert (await client.get("/api/v1/fraud/flags", headers=world.auth("hanbin-market"))).status == 403
    assert (await client.get(f"/api/v1/fraud/flags/{hanyin_flag}", headers=world.auth("hanbin"))).status == 404
    resp = await client.get(f"/api/v1/fraud/flags/{hanbin_flag}", headers=world.auth("hanbin"))
    detail = await resp.json()
    assert resp.status == 200 and detail["rule"] == "burst" and len(detail["evaluations"]) == 5
    assert detail["evaluations"][0]["citizen"] == "138****0041"  # masked, never whole
    assert "13800000041" not in await resp.text()
    resp = await client.get("/api/v1/fraud/flags?status=closed", headers=world.auth("hanbin"))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "status"
    resp = await client.get("/api/v1/fraud/flags?limit=1", headers=world.auth("city"))
    page = await resp.json()
    assert [f["id"] for f in page["items"]] == [hanyin_flag] and page["next_before_id"] == hanyin_flag


async def test_only_the_approval_department_of_the_region_rules_and_only_once(
    client, world, seed: Seeder, clock
) -> None:
    await _burst(seed, clock, "13800000043")
    await detect(client)
    [(flag, _)] = await flags(client)
    url = f"/api/v1/fraud/flags/{flag.id}/ruling"
    body = {"outcome": "dismissed", "note": "同一家庭成员代为评价，已电话核实"}
    assert (await client.post(url, json=body, headers=world.auth("hanbin-market"))).status == 403
    assert (await client.post(url, json=body, headers=world.auth("operator"))).status == 403
    assert (await client.post(url, json=body, headers=world.auth("hanyin"))).status == 404
    resp = await client.post(url, json={"outcome": "dismissed", "note": "   "}, headers=world.auth("hanbin"))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "note"
    resp = await client.post(url, json={"outcome": "maybe", "note": "x"}, headers=world.auth("hanbin"))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "outcome"
    assert [f.status for f, _ in await flags(client)] == ["open"]  # nothing lost, nothing half done
    resp = await client.post(url, json=body, headers=world.auth("hanbin"))
    ruled = await resp.json()
    assert resp.status == 200 and ruled["status"] == "dismissed" and ruled["ruled_by"] == "hanbin"
    assert ruled["decisions_written"] == 0 and await _rows(client, EvaluationDecision) == []
    again = await client.post(url, json={"outcome": "confirmed", "note": "改判"}, headers=world.auth("city"))
    assert again.status == 409


async def test_a_confirmed_good_review_flag_writes_one_decision_and_leaves_the_rating_alone(
    client, world, seed: Seeder, clock
) -> None:
    ids = await _burst(seed, clock, "13800000044")
    await detect(client)
    [(flag, _)] = await flags(client)
    before = [e.model_dump() for e in await _rows(client, Evaluation)]
    resp = await client.post(
        f"/api/v1/fraud/flags/{flag.id}/ruling",
        json={"outcome": "confirmed", "note": "刷好评，已核实"},
        headers=world.auth("city"),
    )
    detail = await resp.json()
    assert resp.status == 200 and detail["decisions_written"] == 5
    assert [e["counts"] for e in detail["evaluations"]] == [False] * 5
    decisions = await _rows(client, EvaluationDecision)
    assert sorted(d.evaluation_id for d in decisions) == ids  # exactly one per rating
    assert {d.decision for d in decisions} == {"fraud"} and all(f"#{flag.id}" in d.note for d in decisions)
    assert [e.model_dump() for e in await _rows(client, Evaluation)] == before  # the ratings themselves unchanged
    async with client.app[STORE].transaction() as session:
        counts = await flag_counts(session)
        assert (counts.confirmed, counts.open, counts.dismissed) == (5, 0, 0)
        assert (await flag_counts(session, region_prefix="610921")).flagged == 0
        assert (await flag_counts(session, start=clock.now())).flagged == 0


async def test_the_analysis_counts_flagged_ratings_apart_within_jurisdiction(
    client, world, seed: Seeder, clock
) -> None:
    await _burst(seed, clock, "13800000046")
    await _burst(seed, clock, "13800000047", org="hanyin-market")
    await detect(client)
    hanbin_flag, _ = [f.id for f, _ in await flags(client, "burst")]
    resp = await client.post(
        f"/api/v1/fraud/flags/{hanbin_flag}/ruling", json={"outcome": "confirmed", "note": "刷好评"},
        headers=world.auth("hanbin"),
    )
    assert resp.status == 200

    async def analysis(org: str, **params: str):  # type: ignore[no-untyped-def]
        resp = await client.get("/api/v1/stats/analysis", params=params, headers=world.auth(org))
        assert resp.status == 200, await resp.text()
        return (await resp.json())["flags"]

    assert await analysis("operator") == {"open": 5, "confirmed": 5, "dismissed": 0}
    assert await analysis("city") == {"open": 5, "confirmed": 5, "dismissed": 0}
    assert await analysis("hanbin") == {"open": 0, "confirmed": 5, "dismissed": 0}
    assert await analysis("hanyin") == {"open": 5, "confirmed": 0, "dismissed": 0}
    assert await analysis("hanbin-market") is None  # units are not shown flags
    # Rated an hour ago: local days after today count none of them.
    day = (clock.now() + timedelta(days=2)).date().isoformat()
    assert await analysis("city", **{"from": day, "to": day}) == {"open": 0, "confirmed": 0, "dismissed": 0}


async def test_a_confirmed_flag_on_bad_reviews_writes_no_decision(client, world, seed: Seeder, clock) -> None:
    await _burst(seed, clock, "13800000045", level=1)
    await detect(client)
    assert {f.rule for f, _ in await flags(client)} == {"burst", "targeted"}  # five bad reviews of HB-017 too
    [(flag, _)] = await flags(client, "burst")
    resp = await client.post(
        f"/api/v1/fraud/flags/{flag.id}/ruling",
        json={"outcome": "confirmed", "note": "恶意差评"},
        headers=world.auth("hanbin"),
    )
    assert resp.status == 200 and (await resp.json())["decisions_written"] == 0
    assert await _rows(client, EvaluationDecision) == []  # the work order's appeal decides how it counts


async def test_a_restart_resumes_from_the_cursor_without_double_flags(
    client, world, seed: Seeder, clock, settings, aiohttp_client
) -> None:
    first = await _burst(seed, clock, "13800000046")
    await detect(client)
    citizen = await seed.citizen("13800000047")
    second = [await seed.rating(citizen_id=citizen, at=clock.now() - timedelta(minutes=n)) for n in range(5)]
    restarted = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    assert await detect(restarted) == 1
    assert [ids for _, ids in await flags(restarted)] == [first, second]
    cursor = (await _rows(restarted, FraudCursor, name="evaluation"))[0]
    assert cursor.last_id == second[-1]
    # Even read again from the start, nothing is flagged twice: one rule links an evaluation once.
    async with restarted.app[STORE].transaction() as session:
        cursor = await session.get(FraudCursor, "evaluation")
        cursor.last_id = 0  # type: ignore[union-attr]
    assert await detect(restarted) == 0
    assert len(await flags(restarted)) == 2


async def test_the_app_runs_the_detector_in_the_background(
    world, seed: Seeder, clock, settings, aiohttp_client
) -> None:
    ids = await _burst(seed, clock, "13800000048")
    background = settings.model_copy(update={"fraud_interval_seconds": 0.05})
    worker = await aiohttp_client(create_app(background, clock=clock, migrate=False, run_background=True))
    for _ in range(200):
        found = await flags(worker)
        if found:
            break
        await asyncio.sleep(0.05)
    assert [ids_ for _, ids_ in found] == [ids]
