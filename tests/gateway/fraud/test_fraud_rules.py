"""Each rule fires on its planted pattern and stays quiet on a near miss (docs/fraud.md)."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from gateway.fraud.models import RatingSignal
from gateway.store.models import OutboundMessage
from gateway.web.keys import STORE
from tests.conftest import case_payload
from tests.gateway.fraud.conftest import Seeder, detect, flags


async def test_burst_flags_one_number_rating_many_services_and_not_a_slower_one(
    client, world, seed: Seeder, clock
) -> None:
    fast, slow, chat = (
        await seed.citizen("13800000001"),
        await seed.citizen("13800000002"),
        await seed.citizen(chat=4242),
    )
    start = clock.now() - timedelta(hours=2)
    planted = [await seed.rating(citizen_id=fast, at=start + timedelta(minutes=5 * n)) for n in range(5)]
    # Near miss: five services too, but the fifth comes 31 minutes after the first, and never 5 in 30.
    for minutes in (0, 10, 20, 29, 31 + 29):
        await seed.rating(citizen_id=slow, at=start + timedelta(minutes=minutes))
    chats = [await seed.rating(citizen_id=chat, at=start + timedelta(minutes=n), channel="bot") for n in range(6)]
    assert await detect(client) == 2
    found = await flags(client, "burst")
    assert [ids for _, ids in found] == [planted, chats]
    assert found[0][0].region_code == "610902" and found[0][0].evidence["services"] == 5


async def test_staff_rater_flags_a_number_on_the_unit_or_county_staff_list(client, world, seed: Seeder) -> None:
    resp = await client.post(
        "/api/v1/fraud/staff-contacts",
        headers=world.auth("hanbin"),
        json={"org_code": "hanbin-market", "contacts": [{"staff_id": "HB-017", "phone": "138 0000 0011"}]},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"org_code": "hanbin-market", "contacts": 1}
    staff, other = await seed.citizen("+8613800000011"), await seed.citizen("13800000012")
    own = await seed.rating(citizen_id=staff, org="hanbin-market")
    neighbour = await seed.rating(citizen_id=staff, org="hanbin-tax")  # same county: still a colleague's office
    await seed.rating(citizen_id=staff, org="hanyin-market")  # near miss: another county's office
    await seed.rating(citizen_id=other, org="hanbin-market")  # near miss: not on the list
    assert await detect(client) == 1
    [(flag, ids)] = await flags(client, "staff_rater")
    assert ids == [own, neighbour]
    assert {m["same_unit"] for m in flag.evidence["matches"]} == {True, False}
    assert "13800000011" not in str(flag.evidence)


async def test_staff_lists_are_uploaded_by_the_approval_department_and_checked(client, world) -> None:
    body = {"org_code": "hanbin-market", "contacts": [{"staff_id": "A", "phone": "13800000011"}]}
    assert (
        await client.post("/api/v1/fraud/staff-contacts", headers=world.auth("hanbin-market"), json=body)
    ).status == 403
    assert (await client.post("/api/v1/fraud/staff-contacts", headers=world.auth("hanyin"), json=body)).status == 403
    bad = {"org_code": "hanbin-market", "contacts": [{"staff_id": "A", "phone": "13800000011"}, {"phone": "12"}]}
    resp = await client.post("/api/v1/fraud/staff-contacts", headers=world.auth("hanbin"), json=bad)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "contacts.1.phone"
    assert (await client.post("/api/v1/fraud/staff-contacts", headers=world.auth("city"), json=body)).status == 200
    # A new list replaces the old one.
    body["contacts"] = []
    resp = await client.post("/api/v1/fraud/staff-contacts", headers=world.auth("hanbin"), json=body)
    assert (await resp.json())["contacts"] == 0


async def _page_rating(
    client,
    world,
    n: int,
    *,
    wait_seconds: float,
    clock,
    cookie: str | None = None,
    address: str = "203.0.113.9",
    level: str = "5",
) -> int:  # type: ignore[no-untyped-def]
    resp = await client.post(
        "/api/v1/cases",
        json=case_payload(f"PG-{n:04d}", citizen={"phone": f"1390000{n:04d}"}),
        headers=world.auth("hanbin-market"),
    )
    token = (await resp.json())["invitation"]["token"]
    client.session.cookie_jar.clear()
    headers = {"X-Real-IP": address}
    if cookie:
        client.session.cookie_jar.update_cookies({"gw_device": cookie})
    page = await client.get(f"/r/{token}", headers=headers)
    html = await page.text()
    opened = html.split('name="opened" value="', 1)[1].split('"', 1)[0]
    clock.advance(seconds=wait_seconds)
    resp = await client.post(f"/r/{token}", data={"level": level, "via": "", "opened": opened}, headers=headers)
    assert resp.status == 201, await resp.text()
    async with client.app[STORE].transaction() as session:
        newest = select(RatingSignal).order_by(RatingSignal.evaluation_id.desc())  # type: ignore[union-attr]
        signal = (await session.exec(newest)).first()
    assert signal is not None
    return signal.evaluation_id


async def test_fast_flags_a_page_rating_seconds_after_the_page_was_shown(client, world, clock) -> None:
    quick = await _page_rating(client, world, 1, wait_seconds=2, clock=clock, address="203.0.113.1")
    await _page_rating(client, world, 2, wait_seconds=8, clock=clock, address="203.0.113.2")  # near miss: 8 s
    assert await detect(client) == 1
    [(flag, ids)] = await flags(client, "fast")
    assert ids == [quick] and flag.evidence["after"] == "page_shown" and flag.evidence["seconds"] == 2.0


async def test_fast_flags_an_sms_answer_seconds_after_the_prompt(client, world, seed: Seeder, clock) -> None:
    citizen = await seed.citizen("13800000021")
    sent = clock.now() - timedelta(minutes=10)
    quick = await seed.rating(citizen_id=citizen, at=sent + timedelta(seconds=3), channel="sms")
    slow = await seed.rating(citizen_id=citizen, at=sent + timedelta(seconds=40), channel="sms")
    async with client.app[STORE].transaction() as session:
        for evaluation_id in (quick, slow):
            from gateway.store.models import Evaluation

            invitation_id = (await session.get(Evaluation, evaluation_id)).invitation_id  # type: ignore[union-attr]
            session.add(
                OutboundMessage(
                    channel="sms",
                    citizen_id=citizen,
                    purpose="prompt",
                    body="…",
                    status="delivered",
                    next_attempt_at=sent,
                    sent_at=sent,
                    created_at=sent,
                    updated_at=sent + timedelta(seconds=1),
                    dedupe_key=f"prompt:{invitation_id}",
                    invitation_id=invitation_id,
                )
            )
    assert await detect(client) == 1
    [(flag, ids)] = await flags(client, "fast")
    assert ids == [quick] and flag.evidence["after"] == "prompt_sent"


async def test_device_and_address_flag_many_page_ratings_from_one_browser_or_address(client, world, clock) -> None:
    device = [
        await _page_rating(client, world, n, wait_seconds=30, clock=clock, cookie="D" * 22, address=f"198.51.100.{n}")
        for n in range(1, 6)
    ]
    # Near miss for the device rule: four from one cookie, the fifth from another.
    for n in range(6, 10):
        await _page_rating(client, world, n, wait_seconds=30, clock=clock, cookie="E" * 22, address=f"198.51.100.{n}")
    await _page_rating(client, world, 10, wait_seconds=30, clock=clock, cookie="F" * 22, address="198.51.100.10")
    # Address: six ratings from one address with fresh cookies (GATEWAY_FRAUD_ADDRESS_COUNT=6 here), five from another.
    address = [
        await _page_rating(client, world, n, wait_seconds=30, clock=clock, address="192.0.2.7") for n in range(11, 17)
    ]
    for n in range(17, 22):
        await _page_rating(client, world, n, wait_seconds=30, clock=clock, address="192.0.2.8")
    await detect(client)
    assert [ids for _, ids in await flags(client, "device")] == [device]
    [(flag, ids)] = await flags(client, "address")
    assert ids == address
    assert "192.0.2.7" not in str(flag.evidence) and "192.0.2.7" not in flag.subject
    async with client.app[STORE].transaction() as session:
        stored = (await session.exec(select(RatingSignal))).all()
    assert all(s.address_hash and len(s.address_hash) == 64 and s.device_hash for s in stored)


async def test_staff_share_flags_a_staff_member_far_above_peers(client, world, seed: Seeder, clock) -> None:
    at = clock.now() - timedelta(days=1)
    fives = {"S1": 8, "S2": 9, "S3": 7, "S4": 8, "S5": 10, "S6": 16, "S7": 11}  # of 16 each; S6 all fives
    ids: dict[str, list[int]] = {}
    citizen = None
    for staff, n5 in fives.items():
        for k in range(16):
            ids.setdefault(staff, []).append(
                await seed.rating(
                    citizen_id=citizen, level=5 if k < n5 else 4, staff_id=staff, at=at + timedelta(minutes=k)
                )
            )
    await detect(client)
    [(flag, flagged)] = await flags(client, "staff_share")
    assert flag.subject == "staff hanbin-market/S6 2026-03" and flagged == ids["S6"]
    assert flag.evidence["robust_z"] >= 3.5 and flag.evidence["peers"] == 7
    # S7 (11 of 16) is high but within the spread: no flag. More ratings for S6 raise no second flag this month.
    await seed.rating(citizen_id=None, level=5, staff_id="S6")
    await detect(client)
    assert len(await flags(client, "staff_share")) == 1


async def test_targeted_flags_repeated_bad_reviews_of_one_staff_member_by_one_number(
    client, world, seed: Seeder, clock
) -> None:
    grudge, other = await seed.citizen("13800000031"), await seed.citizen("13800000032")
    start = clock.now() - timedelta(days=20)
    planted = [
        await seed.rating(citizen_id=grudge, level=1, staff_id="HB-009", at=start + timedelta(days=3 * n))
        for n in range(3)
    ]
    # Near miss: three bad reviews from one number, but of two staff members.
    for n, staff in enumerate(("HB-009", "HB-009", "HB-010")):
        await seed.rating(citizen_id=other, level=2, staff_id=staff, at=start + timedelta(days=3 * n))
    await detect(client)
    [(flag, ids)] = await flags(client, "targeted")
    assert ids == planted and flag.evidence["staff_id"] == "HB-009"


async def test_near_duplicate_texts_from_several_numbers_are_flagged(client, world, seed: Seeder) -> None:
    people = [await seed.citizen(f"138000001{n:02d}") for n in range(6)]
    template = "窗口工作人员态度热情，业务熟练，办事效率非常高，点赞！"
    planted = [
        await seed.rating(citizen_id=people[0], content=template),
        await seed.rating(citizen_id=people[1], content=template.replace("！", "!!")),
        await seed.rating(citizen_id=people[2], content="窗口工作人员态度热情，业务熟练，办事效率非常高。点赞"),
    ]
    # Near miss: the same text from two numbers only, and a different text from a third.
    await seed.rating(citizen_id=people[3], content="材料一次就收齐了，不用来回跑，感谢大厅的耐心指导")
    await seed.rating(citizen_id=people[4], content="材料一次就收齐了，不用来回跑，感谢大厅的耐心指导")
    await seed.rating(citizen_id=people[5], content="排队时间有点长，希望增加窗口，其他都挺好的")
    await detect(client)
    [(flag, ids)] = await flags(client, "near_duplicate")
    assert ids == planted and flag.evidence["numbers"] == 3


async def test_near_duplicates_across_passes_and_in_addenda(client, world, seed: Seeder) -> None:
    from gateway.evaluations.service import add_reasons
    from gateway.store.models import Evaluation
    from gateway.web.keys import DEPS

    people = [await seed.citizen(f"138000002{n:02d}") for n in range(3)]
    text = "工作人员故意刁难，让我来回跑了五趟，要求投诉"
    first = await seed.rating(citizen_id=people[0], level=1, content=text)
    second = await seed.rating(citizen_id=people[1], level=1, content=text + "。")
    assert await detect(client) == 0  # two numbers: not yet
    third = await seed.rating(citizen_id=people[2], level=1)
    async with client.app[STORE].transaction() as session:
        evaluation = await session.get(Evaluation, third)
        await add_reasons(
            session,
            evaluation=evaluation,  # type: ignore[arg-type]
            codes=[115],
            text=text,
            channel="sms",
            deps=client.app[DEPS],
        )
    assert await detect(client) == 1
    [(_, ids)] = await flags(client, "near_duplicate")
    assert ids == [first, second, third]


async def test_near_duplicates_count_the_same_however_passes_cut_a_group(client, world, seed: Seeder) -> None:
    # A template and two copies, each copy one character off the template at a different place: each copy
    # is near the template (similarity 0.74) but not near the other copy (0.54).
    people = [await seed.citizen(f"138000003{n:02d}") for n in range(3)]
    template = "窗口工作人员服务周到耐心细致办理很快非常满意"
    first = await seed.rating(citizen_id=people[0], content=template)
    second = await seed.rating(citizen_id=people[1], content=template[:2] + "的" + template[3:])
    assert await detect(client) == 0  # two numbers: not yet
    third = await seed.rating(citizen_id=people[2], content=template[:-3] + "了" + template[-2:])
    # The third links to the template only; the template's own earlier copy makes the third number.
    assert await detect(client) == 1
    [(flag, ids)] = await flags(client, "near_duplicate")
    assert ids == [first, second, third] and flag.evidence["numbers"] == 3
