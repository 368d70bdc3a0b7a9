"""POST /api/v1/cases/batch: many cases in one request, each answered on its own, all in one transaction."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from sqlmodel import select

import gateway.evaluations.intake as intake
from gateway.evaluations.schemas import MAX_CASES_PER_BATCH
from gateway.stats.rollup import recount, stored
from gateway.store.models import ApiKey, Citizen, Invitation, OutboundMessage, ServiceCase
from gateway.web.http import CALLERS
from gateway.web.keys import DEPS, STORE
from tests.conftest import START, case_payload
from tests.gateway.evaluations.helpers import count, counts

NOTHING = {"ServiceCase": 0, "Invitation": 0, "Evaluation": 0, "Ticket": 0, "OutboundMessage": 0}


def phone(n: int) -> str:
    return f"1391234{n:04d}"


def cases(n: int, start: int = 0, **overrides: Any) -> list[dict[str, object]]:
    return [case_payload(f"BULK-{i}", citizen={"phone": phone(i)}, **overrides) for i in range(start, start + n)]


async def post_batch(client: Any, world: Any, items: list[Any], org: str = "hanbin-market") -> tuple[int, Any]:
    resp = await client.post("/api/v1/cases/batch", json={"cases": items}, headers=world.auth(org))
    return resp.status, await resp.json()


async def test_a_batch_creates_each_case_with_its_invitation_and_prompt(client, world):
    status, body = await post_batch(client, world, cases(25))
    assert status == 200, body
    assert (body["created"], body["existing"], body["refused"]) == (25, 0, 0)
    assert [r["index"] for r in body["results"]] == list(range(25))
    assert all(r["status"] == 201 and r["error"] is None for r in body["results"])
    tokens = {r["case"]["invitation"]["token"] for r in body["results"]}
    assert len(tokens) == 25
    first = body["results"][0]["case"]
    assert first["created"] is True
    assert first["invitation"]["rating_url"] == f"http://gateway.test/r/{first['invitation']['token']}"
    # 2026-03-04 + 7 working days = 2026-03-13, due at its end (Art. 11), as for a single case
    assert first["invitation"]["expires_at"].startswith("2026-03-13T16:00:00")
    assert [m["channel"] for m in first["messages_queued"]] == ["sms"]
    assert await counts(client) == {**NOTHING, "ServiceCase": 25, "Invitation": 25, "OutboundMessage": 25}
    async with client.app[STORE].transaction() as session:
        messages = (await session.exec(select(OutboundMessage))).all()
        invitations = {i.id: i for i in (await session.exec(select(Invitation))).all()}
        citizens = (await session.exec(select(Citizen))).all()
        assert await stored(session) == await recount(session, client.app[DEPS].calendar)  # the statistics count each invitation once
    for message in messages:
        invitation = invitations[message.invitation_id]
        assert invitation.token in message.body and "「个体工商户设立登记」" in message.body
        assert message.dedupe_key == f"prompt:{invitation.id}" and message.citizen_id == invitation.citizen_id
    assert {c.phone_masked for c in citizens} == {f"139****{i:04d}" for i in range(25)}
    vault = client.app[DEPS].vault
    assert all(vault.decrypt(c.phone_enc).startswith("+86139") for c in citizens)


async def test_the_answer_of_a_case_is_the_same_in_a_batch_and_alone(client, world):
    alone = await client.post("/api/v1/cases", json=case_payload("ALONE-1"), headers=world.auth("hanbin-market"))
    single = await alone.json()
    status, body = await post_batch(client, world, [case_payload("ALONE-1"), case_payload("IN-BATCH-1")])
    assert status == 200
    again, new = body["results"]
    assert again["status"] == 200 and again["case"] == {**single, "created": False}
    assert new["status"] == 201 and set(new["case"]) == set(single) and set(new["case"]["invitation"]) == set(single["invitation"])


async def test_one_citizen_per_number_across_the_batch(client, world):
    items = [case_payload(f"P-{i}", citizen={"phone": p}) for i, p in enumerate(["138 1234 1234", "+86 138-1234-1234", phone(1)])]
    status, body = await post_batch(client, world, items)
    assert status == 200 and body["created"] == 3
    assert await count(client, Citizen) == 2
    # The first name given stays; a later case does not rename the citizen.
    await post_batch(client, world, [case_payload("P-9", citizen={"phone": phone(1), "name": "王五"})])
    await post_batch(client, world, [case_payload("P-10", citizen={"phone": phone(1), "name": "赵六"})])
    async with client.app[STORE].transaction() as session:
        citizen = (await session.exec(select(Citizen).where(Citizen.phone_masked == "139****0001"))).one()
    assert client.app[DEPS].vault.decrypt(citizen.name_enc) == "王五"


async def test_bad_cases_are_answered_one_by_one_and_the_good_ones_kept(client, world):
    items: list[Any] = [
        case_payload("GOOD-1", citizen={"phone": phone(1)}),
        dict(case_payload("BAD-TYPE"), case_no=123),
        case_payload("BAD-ORG", org_code="nobody"),
        case_payload("BAD-SIBLING", org_code="hanbin-tax"),  # another unit's cases: not this key's
        case_payload("BAD-REGION", region_code="610921"),
        case_payload("BAD-PHONE", citizen={"phone": "12345"}),
        case_payload("BAD-NUL", item_name="营业\x00执照"),
        case_payload("BAD-FUTURE", completed_at="2027-03-04T09:30:00+08:00"),
        "not an object",
        case_payload("GOOD-2", citizen={"phone": phone(2)}),
    ]
    status, body = await post_batch(client, world, items)
    assert status == 200, body
    results = body["results"]
    assert [r["status"] for r in results] == [201, 422, 422, 403, 422, 422, 422, 422, 422, 201]
    fields = [r["error"]["field"] if r["error"] else None for r in results]
    assert fields == [
        None, "case_no", "org_code", "org_code", "region_code", "citizen.phone", "item_name", "completed_at", None, None
    ]
    assert all(r["error"]["message"] for r in results if r["error"])
    assert [r["case_no"] for r in results] == [
        "GOOD-1", None, "BAD-ORG", "BAD-SIBLING", "BAD-REGION", "BAD-PHONE", "BAD-NUL", "BAD-FUTURE", None, "GOOD-2"
    ]
    assert (body["created"], body["existing"], body["refused"]) == (2, 0, 8)
    assert await counts(client) == {**NOTHING, "ServiceCase": 2, "Invitation": 2, "OutboundMessage": 2}
    assert await count(client, Citizen) == 2  # the refused cases' citizens were not created either
    async with client.app[STORE].transaction() as session:
        assert sorted((await session.exec(select(ServiceCase.case_no))).all()) == ["GOOD-1", "GOOD-2"]


async def test_sending_the_batch_again_changes_nothing(client, world):
    items = cases(10)
    _, first = await post_batch(client, world, items)
    status, second = await post_batch(client, world, items)
    assert status == 200 and (second["created"], second["existing"], second["refused"]) == (0, 10, 0)
    for a, b in zip(first["results"], second["results"], strict=True):
        assert b["status"] == 200 and b["case"]["created"] is False
        assert b["case"]["case_id"] == a["case"]["case_id"]
        assert b["case"]["invitation"] == a["case"]["invitation"]
        assert b["case"]["messages_queued"] == a["case"]["messages_queued"]
    # One case changed since: that one conflicts, the others are still answered as before.
    changed = [*items[:3], dict(items[3], item_name="别的事项"), *items[4:]]
    _, third = await post_batch(client, world, changed)
    assert [r["status"] for r in third["results"]] == [200, 200, 200, 409, 200, 200, 200, 200, 200, 200]
    assert third["results"][3]["error"]["field"] == "case_no"
    assert await counts(client) == {**NOTHING, "ServiceCase": 10, "Invitation": 10, "OutboundMessage": 10}


async def test_a_case_twice_in_one_batch(client, world):
    items = [case_payload("TWICE"), case_payload("TWICE"), case_payload("TWICE", item_name="别的事项")]
    _, body = await post_batch(client, world, items)
    first, again, other = body["results"]
    assert first["status"] == 201 and again["status"] == 200 and other["status"] == 409
    assert again["case"]["case_id"] == first["case"]["case_id"]
    assert again["case"]["invitation"]["token"] == first["case"]["invitation"]["token"]
    assert await counts(client) == {**NOTHING, "ServiceCase": 1, "Invitation": 1, "OutboundMessage": 1}


@pytest.mark.parametrize(
    "org,statuses",
    [
        ("hanbin", [201, 201]),  # the county approval department reports for its units
        ("city", [201, 201]),
        ("hanbin-market", [201, 403]),  # a unit only for itself
        ("hanyin", [403, 403]),  # another county: nothing
    ],
)
async def test_each_case_is_checked_against_the_key(client, world, org, statuses):
    items = [case_payload("J-1"), case_payload("J-2", org_code="hanbin-tax", staff_id=None, service_channel="online")]
    status, body = await post_batch(client, world, items, org=org)
    assert status == 200
    assert [r["status"] for r in body["results"]] == statuses
    assert await count(client, ServiceCase) == statuses.count(201)


async def test_batches_and_themes_in_a_bulk_report(client, world):
    items = [
        case_payload("B-1", batch_no="BATCH-7"),
        case_payload("B-2", batch_no="BATCH-7"),
        case_payload("B-3", batch_no="BATCH-7", item_code="OTHER-ITEM"),  # a batch holds one item
        case_payload("T-1", theme_no="THEME-1", citizen={"phone": phone(5)}),
        case_payload("T-2", theme_no="THEME-1", item_code="TAX-1", citizen={"phone": phone(5)}),
        case_payload("PLAIN-1", citizen={"phone": phone(6)}),
    ]
    status, body = await post_batch(client, world, items)
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 201, 201, 201]
    assert results[2]["error"]["field"] == "item_code"
    assert results[0]["case"]["invitation"]["token"] == results[1]["case"]["invitation"]["token"]
    assert results[0]["case"]["invitation"]["kind"] == "batch"
    assert results[3]["case"]["invitation"]["token"] == results[4]["case"]["invitation"]["token"]
    found = await counts(client)
    assert found["ServiceCase"] == 5 and found["Invitation"] == 3 and found["OutboundMessage"] == 3
    async with client.app[STORE].transaction() as session:
        assert await stored(session) == await recount(session, client.app[DEPS].calendar)


async def test_too_many_cases_is_refused_whole(client, world):
    status, body = await post_batch(client, world, cases(MAX_CASES_PER_BATCH + 1))
    assert status == 413
    assert body["error"]["field"] == "cases" and str(MAX_CASES_PER_BATCH) in body["error"]["message"]
    assert await counts(client) == NOTHING


async def test_a_full_batch_is_taken(client, world):
    status, body = await post_batch(client, world, cases(MAX_CASES_PER_BATCH))
    assert status == 200 and body["created"] == MAX_CASES_PER_BATCH
    assert await count(client, OutboundMessage) == MAX_CASES_PER_BATCH


@pytest.mark.parametrize(
    "payload,status",
    [
        ({"cases": []}, 422),
        ({"cases": {"case_no": "X"}}, 422),
        ({}, 422),
        ({"cases": [case_payload()], "colour": "red"}, 422),
    ],
)
async def test_a_malformed_request_is_refused_whole(client, world, payload, status):
    resp = await client.post("/api/v1/cases/batch", json=payload, headers=world.auth("hanbin-market"))
    assert resp.status == status
    assert (await resp.json())["error"]["message"]
    assert await counts(client) == NOTHING


async def test_an_oversized_body_and_other_bodies(client, world):
    headers = {**world.auth("hanbin-market"), "Content-Type": "application/json"}
    huge = b'{"cases": [' + b" " * (5 * 1024 * 1024) + b"]}"
    assert (await client.post("/api/v1/cases/batch", data=io.BytesIO(huge), headers=headers)).status == 413
    assert (await client.post("/api/v1/cases/batch", data=b"{not json", headers=headers)).status == 400
    form = {**world.auth("hanbin-market"), "Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/api/v1/cases/batch", data=b"cases=1", headers=form)).status == 415
    assert (await client.post("/api/v1/cases/batch", json={"cases": cases(1)})).status == 401
    assert await counts(client) == NOTHING


async def test_cases_and_prompts_commit_together(client, world, monkeypatch):
    """A failure after the cases are written, while queueing their prompts, leaves no case behind."""
    real = intake._prompt_rows

    def failing(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise RuntimeError("the process died while queueing the prompts")

    monkeypatch.setattr(intake, "_prompt_rows", failing)
    resp = await client.post("/api/v1/cases/batch", json={"cases": cases(5)}, headers=world.auth("hanbin-market"))
    assert resp.status == 500
    assert await counts(client) == NOTHING and await count(client, Citizen) == 0
    monkeypatch.setattr(intake, "_prompt_rows", real)
    status, body = await post_batch(client, world, cases(5))
    assert status == 200 and body["created"] == 5
    assert await count(client, OutboundMessage) == 5


async def test_concurrent_batches_with_the_same_cases_create_each_once(client, world):
    items = cases(20)
    answers = await asyncio.gather(*(post_batch(client, world, items) for _ in range(4)))
    assert all(status == 200 for status, _ in answers)
    statuses = [r["status"] for _, body in answers for r in body["results"]]
    assert statuses.count(201) == 20 and all(s in (200, 201) for s in statuses)
    assert await counts(client) == {**NOTHING, "ServiceCase": 20, "Invitation": 20, "OutboundMessage": 20}
    assert await count(client, Citizen) == 20


async def test_a_revoked_key_stops_working_once_its_cached_caller_expires(client, world):
    now = [1000.0]
    cache = client.app[CALLERS]
    cache.monotonic = lambda: now[0]
    status, _ = await post_batch(client, world, cases(1))
    assert status == 200
    async with client.app[STORE].transaction() as session:
        for key in (await session.exec(select(ApiKey))).all():
            key.revoked_at = START
    now[0] += cache.ttl_seconds - 1  # still remembered: the database is not asked again
    assert (await post_batch(client, world, cases(1, start=1)))[0] == 200
    now[0] += 2
    status, body = await post_batch(client, world, cases(1, start=2))
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert await count(client, ServiceCase) == 2


async def test_new_citizens_are_added_in_one_order_whatever_the_reports_order(client, world):
    """Every writer adds new citizens in the order of their lookup hash: two reports adding the same new
    citizens at once then wait for each other on the unique key (and the later retries) instead of
    each holding one the other needs."""
    status, body = await post_batch(client, world, list(reversed(cases(6))))
    assert status == 200, body
    async with client.app[STORE].transaction() as session:
        rows = (await session.exec(select(Citizen.id, Citizen.phone_hash).order_by(Citizen.id))).all()
    assert len(rows) == 6
    assert [h for _, h in rows] == sorted(h for _, h in rows)


async def test_cases_and_invitations_are_written_in_the_order_of_their_unique_keys(client, world, database_url, monkeypatch):
    """On PostgreSQL the rows with a unique key (a unit's case number) go to the write in that key's order,
    so two reports of the same cases at once wait for each other instead of deadlocking."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite writes one report at a time")
    written: dict[str, list[dict[str, Any]]] = {}
    chained = intake.chained_insert

    async def recorded(session, parts):  # type: ignore[no-untyped-def]
        written.update((part.model.__tablename__, rows) for part, rows in parts)
        return await chained(session, parts)

    monkeypatch.setattr(intake, "chained_insert", recorded)
    status, body = await post_batch(client, world, list(reversed(cases(6))))
    assert status == 200, body
    numbers = [row["case_no"] for row in written["service_case"]]
    assert numbers == sorted(numbers) == [row["group_no"] for row in written["invitation"]] and len(numbers) == 6
    async with client.app[STORE].transaction() as session:  # and each case is its own invitation's
        stored = (await session.exec(select(ServiceCase.case_no, Invitation.group_no).join(Invitation))).all()
    assert sorted(stored) == [(n, n) for n in numbers]
