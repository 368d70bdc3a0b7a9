"""The feed: every valid evaluation and each later change that matters becomes a record, written with
the change, sent at least once in order, retried with backoff, refused ones set aside with the province's
words (against a FakeProvince on loopback; SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from gateway.app import create_app
from gateway.settings import load_settings
from gateway.upload.feed import retry, upload_status
from gateway.upload.models import UploadRecord
from gateway.upload.profile import load_profile
from gateway.wiring.upload import UPLOAD_FEED
from gateway.web.keys import STORE
from tests.conftest import register_world
from tests.fakes.province_api import TOKEN, FakeProvince
from tests.gateway.tickets.helpers import Api
from tests.gateway.upload.conftest import profile_variant, province_settings, upload_rows


async def drain(feed, passes: int = 10) -> None:  # type: ignore[no-untyped-def]
    for _ in range(passes):
        if not await feed.run_once():
            return


async def test_without_a_profile_nothing_is_queued(aiohttp_client, database_url, clock):
    settings = load_settings(database_url=database_url, public_url="http://gateway.test", run_dispatcher=False)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(client.app[STORE], clock)
    from tests.conftest import case_payload

    body = await (await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))).json()
    resp = await client.post(f"/r/{body['invitation']['token']}", json={"level": 1, "reasons": [115]})
    assert resp.status == 201
    assert client.app[UPLOAD_FEED] is None
    assert await upload_rows(client) == []


async def test_an_evaluation_and_its_later_changes_go_up_in_order(client, world, rate, feed, fake_province):
    rated = await rate(2, reasons=[213, 210], text="同一份证明交了三次")
    evaluation_id, ticket_id = rated["evaluation_id"], rated["ticket_id"]
    api = Api(client, world)
    await api.resolved(ticket_id)
    await api.ok("hanbin", ticket_id, "callback_result", outcome="satisfied")
    rows = await upload_rows(client)
    assert [(r.record_key, r.change) for r in rows] == [
        (f"{evaluation_id}:1", "evaluation"), (f"{evaluation_id}:2", "rectification"),
        (f"{evaluation_id}:3", "callback"),
    ]
    await drain(feed)
    sent = fake_province.received
    assert [r["assessId"] for r in sent] == [f"{evaluation_id}:1", f"{evaluation_id}:2", f"{evaluation_id}:3"]
    assert [r["assessNumber"] for r in sent] == ["1", "2", "2"]
    first = sent[0]
    assert first["satisfaction"] == 2 and first["pf"] == "2" and first["evalDetail"] == "210,213"
    assert first["writingEvaluation"] == "同一份证明交了三次" and first["taskCode"] == "11610902MB0001"
    assert first["projectNo"].startswith("U-") and first["deptCode"] == "hanbin-market"
    assert first["areaCode"] == "610902"
    assert first["userProp"] == "1" and "rectifyInfo" not in first
    assert sent[1]["rectifyInfo"] == "retrained the window staff" and "revisitResult" not in sent[1]
    assert sent[2]["revisitResult"] == "1"
    assert {r.status for r in await upload_rows(client)} == {"acknowledged"}
    assert fake_province.repeats == 0


async def test_an_appeal_ruling_goes_up_as_a_new_version_marked_invalid(client, world, rate, feed, fake_province):
    rated = await rate(1, reasons=[115])
    api = Api(client, world)
    await api.in_progress(rated["ticket_id"])
    await api.ok("hanbin-market", rated["ticket_id"], "appeal", grounds="malicious",
                 evidence="评价人当日并未在本窗口办理业务（窗口日志）")
    await api.ok("hanbin", rated["ticket_id"], "decide_appeal", decision="malicious", reason="查无此办件人")
    await drain(feed)
    assert [(r["assessId"].split(":")[1], r["isValid"]) for r in fake_province.received] == [("1", "1"), ("2", "0")]


async def test_good_ratings_and_reasons_added_later_are_uploaded(client, world, rate, feed, fake_province):
    from gateway.deps import Deps
    from gateway.evaluations.service import add_staff_rating
    from gateway.store.models import Evaluation
    from gateway.web.keys import DEPS

    rated = await rate(5, staff_level=None)
    async with client.app[STORE].transaction() as session:
        evaluation = await session.get(Evaluation, rated["evaluation_id"])
        deps: Deps = client.app[DEPS]
        await add_staff_rating(session, evaluation=evaluation, staff_level=4, channel="web", deps=deps)
    await drain(feed)
    assert [(r["satisfaction"], r.get("workerSatisfaction")) for r in fake_province.received] == [(5, None), (5, 4)]


async def test_a_refused_ticket_action_queues_nothing(client, world, rate, feed):
    rated = await rate(2, reasons=[213])
    api = Api(client, world)
    status, _ = await api.act("hanbin-market", rated["ticket_id"], "resolve", rectification="x", reply="y")
    assert status in (403, 404, 409)  # not transferred yet: refused, and its savepoint leaves nothing
    assert [r.change for r in await upload_rows(client)] == ["evaluation"]


async def test_failures_are_retried_with_backoff_until_accepted(client, rate, feed, fake_province, clock):
    await rate(4)
    fake_province.fail_next(2, status=503)
    assert await feed.run_once() == 1
    [row] = await upload_rows(client)
    assert row.status == "pending" and row.attempts == 1 and row.error_code == "http_503"
    assert await feed.run_once() == 0  # not due yet: the backoff holds it
    clock.advance(seconds=3)
    assert await feed.run_once() == 1
    [row] = await upload_rows(client)
    assert row.attempts == 2 and row.status == "pending"
    clock.advance(seconds=10)
    await drain(feed)
    [row] = await upload_rows(client)
    assert row.status == "acknowledged" and row.attempts == 3 and fake_province.requests == 3
    assert len(fake_province.received) == 1


async def test_a_time_out_is_retried(aiohttp_client, database_url, fake_province, clock, tmp_path):
    path = profile_variant(tmp_path, **{"timeout_seconds = 10": "timeout_seconds = 0.3"})
    settings = province_settings(database_url, fake_province.url, province_profile=path)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(client.app[STORE], clock)
    from tests.conftest import case_payload

    body = await (await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))).json()
    await client.post(f"/r/{body['invitation']['token']}", json={"level": 5})
    fake_province.fail_next(1, status=200, delay_seconds=5)
    feed = client.app[UPLOAD_FEED]
    await feed.run_once()
    [row] = await upload_rows(client)
    assert row.status == "pending" and row.error_code == "timeout"
    clock.advance(seconds=5)
    await feed.run_once()
    assert [r.status for r in await upload_rows(client)] == ["acknowledged"]


async def test_a_record_the_province_refuses_is_set_aside_with_its_message(client, rate, feed, fake_province, clock):
    fake_province.refuse(lambda r: "事项编码不存在" if r["taskCode"] == "BAD-CODE" else None)
    await rate(5, item_code="BAD-CODE")
    await rate(4)
    await drain(feed)
    bad, good = await upload_rows(client)
    assert bad.status == "failed" and bad.last_error == "事项编码不存在" and bad.error_code == "http_400"
    assert good.status == "acknowledged"
    status = await upload_status(client.app[STORE], clock.now())
    assert (status["failed"], status["acknowledged"], status["pending"]) == (1, 1, 0)
    # Once the province knows the item, the operator puts the record back and it goes through.
    fake_province.refuse(lambda r: None)
    assert await retry(client.app[STORE], [bad.id, good.id], clock.now()) == 1
    await drain(feed)
    assert [r.status for r in await upload_rows(client)] == ["acknowledged", "acknowledged"]


async def test_a_refused_batch_is_split_to_find_the_bad_record(aiohttp_client, database_url, clock, tmp_path):
    path = profile_variant(tmp_path, **{"batch_size = 1": "batch_size = 10"})
    batch_fake = FakeProvince(profile=load_profile(path))
    async with batch_fake:
        settings = province_settings(database_url, batch_fake.url, province_profile=path)
        client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
        world = await register_world(client.app[STORE], clock)
        from tests.conftest import case_payload

        for i, code in enumerate(["A1", "BAD", "A3", "A4"]):
            payload = case_payload(f"B-{i}", item_code=code)
            body = await (await client.post("/api/v1/cases", json=payload, headers=world.auth("hanbin-market"))).json()
            await client.post(f"/r/{body['invitation']['token']}", json={"level": 5})
        batch_fake.refuse(lambda r: "事项编码不存在" if r["taskCode"] == "BAD" else None)
        feed = client.app[UPLOAD_FEED]
        await drain(feed)
        rows = await upload_rows(client)
        assert [r.status for r in rows] == ["acknowledged", "failed", "acknowledged", "acknowledged"]
        assert rows[1].last_error == "事项编码不存在"
        assert sorted(r["taskCode"] for r in batch_fake.received) == ["A1", "A3", "A4"]


async def test_a_wrong_secret_keeps_the_record_and_retries(client, rate, feed, fake_province):
    fake_province.app_secret = "not-the-one-we-sign-with"
    await rate(5)
    await feed.run_once()
    [row] = await upload_rows(client)
    assert fake_province.unauthorised == 1 and row.status == "pending" and row.error_code == "http_401"


async def test_two_feeds_never_send_a_record_twice(client, rate, feed, fake_province, settings):
    for _ in range(12):
        await rate(5)
    from gateway.wiring.upload import build_feed

    other = build_feed(settings, client.app[STORE], feed.transport, feed.clock)
    await asyncio.gather(drain(feed), drain(other))
    assert len(fake_province.accepted) == 12 and fake_province.repeats == 0


async def test_metrics_show_the_feed(client, rate, feed, fake_province):
    await rate(5)
    await rate(4)
    fake_province.refuse(lambda r: "x" if r["satisfaction"] == 4 else None)
    text = await (await client.get("/metrics")).text()
    assert 'gateway_upload_records{state="pending"} 2.0' in text
    await drain(feed)
    text = await (await client.get("/metrics")).text()
    assert 'gateway_upload_records{state="acknowledged"} 1.0' in text
    assert 'gateway_upload_records{state="failed"} 1.0' in text
    assert "gateway_upload_oldest_pending_seconds 0.0" in text


async def test_the_record_is_written_in_the_ratings_transaction(client, world, rate):
    # One evaluation, one first record: a rating that is refused (rated twice) adds neither.
    from tests.conftest import case_payload

    resp = await client.post("/api/v1/cases", json=case_payload("T-1"), headers=world.auth("hanbin-market"))
    body = await resp.json()
    token = body["invitation"]["token"]
    assert (await client.post(f"/r/{token}", json={"level": 5})).status == 201
    assert (await client.post(f"/r/{token}", json={"level": 1, "reasons": [115]})).status == 409
    rows = await upload_rows(client)
    assert [(r.version, r.level) for r in rows] == [(1, 5)]
    assert isinstance(rows[0], UploadRecord)


async def test_a_later_version_waits_while_an_earlier_one_is_retried(client, world, rate, feed, fake_province, clock):
    rated = await rate(2, reasons=[213])
    await Api(client, world).resolved(rated["ticket_id"])
    fake_province.fail_next(1, status=503)
    await drain(feed)
    assert fake_province.received == []  # version 1 failed once; version 2 is not sent ahead of it
    assert [r.status for r in await upload_rows(client)] == ["pending", "pending"]
    clock.advance(seconds=5)
    await drain(feed)
    assert [r["assessId"].split(":")[1] for r in fake_province.received] == ["1", "2"]


async def test_a_bearer_token_profile(aiohttp_client, database_url, clock, tmp_path):
    path = profile_variant(tmp_path, **{'kind = "hmac"': 'kind = "bearer"'})
    async with FakeProvince(profile=load_profile(path)) as bearer_fake:
        settings = province_settings(database_url, bearer_fake.url, province_profile=path, province_token=TOKEN)
        client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
        world = await register_world(client.app[STORE], clock)
        from tests.conftest import case_payload

        resp = await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))
        body = await resp.json()
        await client.post(f"/r/{body['invitation']['token']}", json={"level": 5})
        bearer_fake.token = "another-token"
        await client.app[UPLOAD_FEED].run_once()
        assert bearer_fake.unauthorised == 1 and bearer_fake.received == []
        bearer_fake.token = TOKEN
        clock.advance(seconds=5)
        await client.app[UPLOAD_FEED].run_once()
        assert [r["satisfaction"] for r in bearer_fake.received] == [5]
