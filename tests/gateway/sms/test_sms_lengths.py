"""Every SMS the gateway sends fits two segments with the signature, whatever the service and office
names: the names are shortened (the office first), never the instructions (DESIGN §2)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations import SurveyRef, survey_prompt
from gateway.callbacks.messages import survey_message
from gateway.dialogue import sms_text
from gateway.evaluations.prompts import sms_prompt
from gateway.messaging.segments import segments
from gateway.tickets.messages import reply_notice
from tests.conversations.conversation_world import LONG_ITEM, LONG_OFFICE, World

SIGNATURES = ("【政务服务好差评】", "【安康市政务服务好差评系统】")
ORDINARY_ITEM, ORDINARY_OFFICE = "个体工商户设立登记", "汉滨区市场监督管理局"


def conversation(item: str, office: str, scenario: str) -> list:  # type: ignore[type-arg]
    """Every reply of one scenario, with these names."""
    world = World()
    replies = []

    def keep(transition) -> None:  # type: ignore[no-untyped-def]
        replies.extend(transition.replies)

    window = scenario.endswith("window")
    if scenario.startswith("choose"):
        for n in range(1, 6):
            world.invite(n, item * n, office, window=window, minutes_ago=10 * n)
        keep(world.send("4"))
        keep(world.send("1"))
        return replies
    world.invite(7, item, office, window=window)
    if scenario.startswith("good"):
        keep(world.send("5"))
        keep(world.send("4"))
    elif scenario.startswith("bad-remark"):
        keep(world.send("1 窗口让我跑了三趟"))
    elif scenario.startswith("bad-reasons"):
        keep(world.send("1"))
        keep(world.send("1 2 3 4 5 6 7 8 窗口让我跑了三趟"))
        keep(world.send("5"))
    elif scenario.startswith("bad-reminder"):
        keep(world.send("2"))
        world.wait(3600)
        keep(world.fire_timer())
        keep(world.send("2 3 7"))
    elif scenario.startswith("fair"):
        keep(world.send("3"))
    return replies


SCENARIOS = [f"{kind}-{where}" for kind in ("good", "fair", "bad-remark", "bad-reasons", "bad-reminder", "choose")
             for where in ("online", "window")]
names = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=120)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=names, office=names, scenario=st.sampled_from(SCENARIOS), signature=st.sampled_from(SIGNATURES))
def test_every_answer_fits_two_segments_whatever_the_names(item, office, scenario, signature):
    replies = conversation(item, office, scenario)
    assert replies
    for reply in replies:
        body = sms_text(reply, signature)
        assert segments(body) <= 2, body
        assert body.startswith(signature)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("signature", SIGNATURES)
def test_the_longest_names_of_the_fixtures_fit(scenario, signature):
    for reply in conversation(LONG_ITEM, LONG_OFFICE, scenario):
        body = sms_text(reply, signature)
        assert segments(body) <= 2, body
        # The instructions are whole: what to type is never cut, nor the options.
        assert reply.text[-8:] in body
        assert all(f"{c.key}.{c.label}"[:6] in body for c in reply.choices if c.key)


@pytest.mark.parametrize("level", ["1", "2"])
def test_the_reasons_question_keeps_an_ordinary_item_name_whole(level):
    """Before: 146-150 characters, three segments. Now the office gives way and the item stays."""
    world = World()
    world.invite(7, ORDINARY_ITEM, ORDINARY_OFFICE, window=True)
    (question,) = world.send(level).replies
    body = sms_text(question, SIGNATURES[0])
    assert segments(body) <= 2 and f"「{ORDINARY_ITEM}」" in body and "请告诉我们原因" in body
    assert "1.增加审批条件" in body or "1.无材料样本" in body


def test_short_names_are_kept_whole_with_the_office():
    (reply,) = conversation("户籍迁移", "公安局户政窗口", "fair-online")
    assert "「户籍迁移」（公安局户政窗口，5月5日）" in sms_text(reply, SIGNATURES[0])


@settings(max_examples=40, deadline=None)
@given(item=names, signature=st.sampled_from(SIGNATURES))
def test_the_other_messages_fit_too(item, signature):
    at = datetime(2026, 3, 4, 2, tzinfo=timezone.utc)
    survey, _ = survey_message(channel="sms", signature=signature, ticket_id=9, item_name=item, at=at)
    assert segments(survey) <= 2 and "1.满意" in survey and "2.不满意" in survey
    prompt = sms_prompt(signature=signature, item_name=item, completed_at=at, tz="Asia/Shanghai",
                        link="http://127.0.0.1:8080/r/AbCdEfGh12")
    assert segments(prompt) <= 2 and "http://127.0.0.1:8080/r/AbCdEfGh12" in prompt
    notice = reply_notice(channel="sms", signature=signature, item_name=item, reply="已为您补正材料清单，欢迎再来办理。")
    assert segments(notice) <= 2 and "已为您补正材料清单，欢迎再来办理。" in notice
    assert survey_prompt(SurveyRef(ticket_id=9, item_name=item, sent_at=at)).shorter


async def test_end_to_end_with_the_longest_names(client, world, phone, fake_twilio):  # type: ignore[no-untyped-def]
    """Through the API, the inbox, the outbox and the Twilio SDK: the prompt and every answer fit."""
    from tests.gateway.evaluations.helpers import report
    from gateway.web.keys import DISPATCHER

    await report(client, world, item_name=LONG_ITEM[:200], staff_id="HB-017")
    await phone.text("1")
    await phone.text("1 2 3 4 5 6 7 8 窗口让我跑了三趟")
    await phone.text("5")
    await client.app[DISPATCHER].run_once()
    bodies = [r.form["Body"] for r in fake_twilio.sent]
    assert len(bodies) == 4  # the prompt, the reasons question, the confirmation with the staff question, the thanks
    assert all(segments(body) <= 2 for body in bodies), bodies
    assert "8项原因" in bodies[2] or "增加审批条件" in bodies[2]
