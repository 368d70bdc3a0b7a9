"""/my: the citizen's evaluations and the state of the work orders opened from them, with the reply."""

from __future__ import annotations

from gateway.store.models import Ticket
from tests.gateway.bot.conftest import Chat, flush, rows
from tests.gateway.evaluations.helpers import report

REPLY = "已对窗口人员开展业务培训，感谢监督。"


async def _act(client, world, org: str, ticket_id: int, action: str, **fields) -> None:  # type: ignore[no-untyped-def]
    resp = await client.post(f"/api/v1/tickets/{ticket_id}/actions", json={"action": action, **fields}, headers=world.auth(org))
    assert resp.status == 200, await resp.json()


async def test_my_shows_evaluations_ticket_state_and_the_departments_reply(client, world, chat, fake_telegram):
    from gateway.store.models import Invitation

    await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id},
                 service_channel="online", staff_id=None)
    await report(client, world, case_no="HB-2", item_name="食品经营许可", item_code="X2",
                 citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id}, service_channel="online", staff_id=None)
    await flush(client)
    first, second = await rows(client, Invitation)
    await chat.tap(f"rt:{first.id}:1", chat.message_with(f"rt:{first.id}:1"))
    await chat.say("让我跑了三趟")
    await chat.tap(f"rt:{second.id}:5", chat.message_with(f"rt:{second.id}:5"))
    await flush(client)
    (ticket,) = await rows(client, Ticket)

    await chat.say("/my")
    await flush(client)
    listing = chat.last["text"]
    assert listing.startswith("您最近的评价：")
    assert "「食品经营许可」" in listing and "：非常满意" in listing
    assert "「个体工商户设立登记」" in listing and "：非常不满意" in listing
    assert "差评办理：已转有关部门，应于3月18日前办结" in listing

    await _act(client, world, "hanbin", ticket.id, "transfer")
    await _act(client, world, "hanbin-market", ticket.id, "accept", category="general")
    await _act(client, world, "hanbin-market", ticket.id, "resolve", rectification="组织窗口人员培训", reply=REPLY)
    await flush(client)
    assert REPLY in chat.last["text"]  # the reply itself came to the chat (Art. 15(二))

    await chat.say("/my")
    await flush(client)
    listing = chat.last["text"]
    assert "差评办理：已整改并答复" in listing and f"答复：{REPLY}" in listing
    assert "13812341234" not in listing


async def test_my_never_shows_another_citizens_evaluations(client, world, fake_telegram):
    from gateway.store.models import Invitation

    mine, theirs = Chat(client, fake_telegram, 800000011), Chat(client, fake_telegram, 800000012)
    await report(client, world, case_no="T-1", item_name="户籍迁移", citizen={"telegram_chat_id": theirs.user_id},
                 service_channel="online", staff_id=None)
    await flush(client)
    (invitation,) = await rows(client, Invitation)
    await theirs.tap(f"rt:{invitation.id}:2", theirs.last)
    await mine.say("/my")
    await flush(client)
    assert mine.last["text"].startswith("您还没有评价记录") and "户籍迁移" not in mine.last["text"]


async def test_help(client, chat):
    await chat.say("/help")
    await flush(client)
    assert "/my" in chat.last["text"] and "5非常满意" in chat.last["text"]
