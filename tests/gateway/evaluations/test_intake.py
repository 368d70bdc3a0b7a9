"""POST /api/v1/cases: validation, idempotency, batches and themes, key scoping, phone privacy."""

from __future__ import annotations

import pytest
from sqlmodel import select

from gateway.store.models import Citizen, Invitation, OutboundMessage
from gateway.web.keys import DEPS, STORE
from tests.conftest import case_payload
from tests.gateway.evaluations.helpers import count, counts, report


async def test_case_creates_invitation_and_queues_prompt(client, world):
    body = await report(client, world)
    assert body["created"] is True
    invitation = body["invitation"]
    token = invitation["token"]
    assert 12 <= len(token) <= 16 and token.replace("-", "").replace("_", "").isalnum()
    assert invitation["rating_url"] == f"http://gateway.test/r/{token}"
    assert invitation["qr_png_url"].endswith("/qr.png")
    assert invitation["status"] == "open" and invitation["kind"] == "single"
    # 2026-03-04 + 7 working days = 2026-03-13, due at its end (Art. 11)
    assert invitation["expires_at"].startswith("2026-03-13T16:00:00")
    assert [m["channel"] for m in body["messages_queued"]] == ["sms"]
    async with client.app[STORE].transaction() as session:
        message = (await session.exec(select(OutboundMessage))).one()
    assert token in message.body and "「个体工商户设立登记」" in message.body
    assert "5非常满意" in message.body and "1非常不满意" in message.body


async def test_same_case_twice_is_idempotent(client, world):
    first = await report(client, world)
    resp = await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))
    second = await resp.json()
    assert resp.status == 200 and second["created"] is False
    assert second["invitation"]["token"] == first["invitation"]["token"]
    assert second["case_id"] == first["case_id"]
    assert (await counts(client))["OutboundMessage"] == 1


async def test_same_case_no_with_other_content_conflicts(client, world):
    await report(client, world)
    resp = await client.post("/api/v1/cases", json=case_payload(item_name="别的事项"), headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 409 and body["error"]["field"] == "case_no"
    assert (await counts(client))["ServiceCase"] == 1


async def test_concurrent_duplicate_reports_create_one_case(client, world):
    import asyncio

    responses = await asyncio.gather(
        *(client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market")) for _ in range(8))
    )
    assert sorted(r.status for r in responses).count(201) == 1
    assert all(r.status in (200, 201, 409) for r in responses)
    found = await counts(client)
    assert found["ServiceCase"] == 1 and found["Invitation"] == 1 and found["OutboundMessage"] == 1


async def test_batch_shares_one_invitation_and_one_prompt(client, world):
    a = await report(client, world, case_no="B-1", batch_no="BATCH-7")
    b = await report(client, world, case_no="B-2", batch_no="BATCH-7")
    assert a["invitation"]["token"] == b["invitation"]["token"]
    assert a["invitation"]["kind"] == "batch"
    found = await counts(client)
    assert found["ServiceCase"] == 2 and found["Invitation"] == 1 and found["OutboundMessage"] == 1


async def test_batch_of_different_items_is_refused(client, world):
    await report(client, world, case_no="B-1", batch_no="BATCH-7")
    resp = await client.post(
        "/api/v1/cases", json=case_payload("B-2", batch_no="BATCH-7", item_code="OTHER-ITEM"), headers=world.auth("hanbin-market")
    )
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "item_code"


async def test_theme_links_items_under_one_invitation(client, world):
    a = await report(client, world, case_no="T-1", theme_no="THEME-1", item_name="营业执照")
    b = await report(client, world, case_no="T-2", theme_no="THEME-1", item_name="税务登记", item_code="TAX-1")
    assert a["invitation"]["token"] == b["invitation"]["token"] and a["invitation"]["kind"] == "theme"


async def test_batch_and_theme_together_is_refused(client, world):
    resp = await client.post("/api/v1/cases", json=case_payload(batch_no="B", theme_no="T"), headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 422 and "batch" in body["error"]["message"]


async def test_case_without_contact_gets_link_but_no_message(client, world):
    body = await report(client, world, citizen={})
    assert body["messages_queued"] == [] and body["invitation"]["rating_url"]


async def test_telegram_citizen_is_prompted_by_sms_when_bot_is_off(client, world):
    body = await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": 42})
    assert [m["channel"] for m in body["messages_queued"]] == ["sms"]


async def test_phone_is_encrypted_hashed_and_masked(client, world):
    await report(client, world)
    async with client.app[STORE].transaction() as session:
        citizen = (await session.exec(select(Citizen))).one()
    assert citizen.phone_masked == "138****1234"
    assert "13812341234" not in (citizen.phone_enc or "") and "13812341234" not in (citizen.phone_hash or "")
    assert client.app[DEPS].vault.decrypt(citizen.phone_enc) == "+8613812341234"


async def test_same_phone_in_other_formats_is_one_citizen(client, world):
    await report(client, world, case_no="P-1", citizen={"phone": "138 1234 1234"})
    await report(client, world, case_no="P-2", citizen={"phone": "+86 138-1234-1234"})
    assert await count(client, Citizen) == 1


# --- API key scoping ---------------------------------------------------------------------------

@pytest.mark.parametrize("org,status", [
    ("hanbin-market", 201),   # the unit itself
    ("hanbin", 201),          # its county approval department
    ("city", 201),            # the city bureau above it
    ("operator", 201),        # the platform operator
    ("hanbin-tax", 403),      # a sibling unit
    ("hanyin", 403),          # another county's department
    ("hanyin-market", 403),   # another county's unit
])
async def test_api_key_scoping(client, world, org, status):
    resp = await client.post("/api/v1/cases", json=case_payload(), headers=world.auth(org))
    assert resp.status == status, await resp.text()
    assert await count(client, Invitation) == (1 if status == 201 else 0)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic abc", "Bearer gk_000000000000_forged"])
async def test_missing_or_bad_key_is_401(client, world, header):
    headers = {"Authorization": header} if header else {}
    resp = await client.post("/api/v1/cases", json=case_payload(), headers=headers)
    assert resp.status == 401
    assert "Bearer" in (await resp.json())["error"]["message"] or "not valid" in (await resp.json())["error"]["message"]
    assert await count(client, Invitation) == 0


# --- malformed input: a clear 4xx, nothing changed -----------------------------------------------

BAD = [
    ("wrong type", dict(case_payload(), case_no=123), "case_no"),
    ("missing field", {k: v for k, v in case_payload().items() if k != "item_name"}, "item_name"),
    ("100 KB text", dict(case_payload(), item_name="办" * 100_000), None),
    ("unknown channel", dict(case_payload(), service_channel="fax"), "service_channel"),
    ("naive time", dict(case_payload(), completed_at="2026-03-04T09:30:00"), "completed_at"),
    ("future time", dict(case_payload(), completed_at="2027-03-04T09:30:00+08:00"), "completed_at"),
    ("bad region", dict(case_payload(), region_code="61090"), "region_code"),
    ("region without department", dict(case_payload(), region_code="610999"), "region_code"),
    ("another county's region", dict(case_payload(), region_code="610921"), "region_code"),
    ("sql in case_no", dict(case_payload(), case_no="1'; DROP TABLE ticket;--"), "case_no"),
    ("html in item code", dict(case_payload(), item_code="<script>alert(1)</script>"), "item_code"),
    ("bad phone", dict(case_payload(), citizen={"phone": "12345"}), "citizen.phone"),
    ("unknown field", dict(case_payload(), colour="red"), "colour"),
    ("unknown unit", dict(case_payload(), org_code="nobody"), "org_code"),
    ("chat id as text", dict(case_payload(), citizen={"telegram_chat_id": "42"}), "citizen.telegram_chat_id"),
    ("NUL in item name", dict(case_payload(), item_name="营业\x00执照"), "item_name"),
    ("staff on online case", dict(case_payload(), service_channel="online"), None),
]


@pytest.mark.parametrize("name,payload,field", BAD, ids=[b[0] for b in BAD])
async def test_malformed_case_is_refused_and_changes_nothing(client, world, name, payload, field):
    resp = await client.post("/api/v1/cases", json=payload, headers=world.auth("hanbin-market"))
    assert 400 <= resp.status < 500, name
    body = await resp.json()
    assert body["error"]["message"]
    if field and resp.status == 422:
        fields = {d["field"] for d in body["error"].get("details", [])} | {body["error"].get("field")}
        assert field in fields, body
    assert await counts(client) == {"ServiceCase": 0, "Invitation": 0, "Evaluation": 0, "Ticket": 0, "OutboundMessage": 0}


@pytest.mark.parametrize("raw,content_type,status", [
    (b'{"case_no": "\xff\xfe"}', "application/json", 400),
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 422),
    (b"case_no=1", "application/x-www-form-urlencoded", 415),
])
async def test_undecodable_bodies(client, world, raw, content_type, status):
    headers = {**world.auth("hanbin-market"), "Content-Type": content_type}
    resp = await client.post("/api/v1/cases", data=raw, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"]["message"]
    assert await count(client, Invitation) == 0


async def test_html_in_item_name_is_escaped_on_the_page(client, world):
    body = await report(client, world, item_name="<script>alert(1)</script>办照")
    page = await (await client.get(f"/r/{body['invitation']['token']}")).text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


async def test_oversized_body_is_refused(client, world):
    resp = await client.post("/api/v1/cases", data=b"{" + b" " * 400_000 + b"}", headers={**world.auth("hanbin-market"), "Content-Type": "application/json"})
    assert resp.status == 413
