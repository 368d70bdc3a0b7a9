import json
from datetime import datetime, timedelta

import pytest
from conversation_world import CATALOGUE, START, Rating

from conversations import (
    AttachReasons,
    AttachSurveyReason,
    CancelTimer,
    Context,
    Inbound,
    OptIn,
    OptOut,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    ScheduleTimer,
    advance,
    plain_text,
    rating_prompt,
    survey_prompt,
)
from conversations import texts
from conversations.flows import QUESTION_TTL_SECONDS, STATE_TTL_SECONDS

SMS_TWO_SEGMENTS = 134  # Chinese characters in a two-part SMS


class TestRating:
    def test_one_open_invitation_is_rated_and_named(self, world):
        world.invite(7, "户籍迁移", "公安局户政窗口")
        t = world.send("4")
        assert t.effects == (RecordRating(7, 4),)
        assert world.reply.startswith("已记录您对「户籍迁移」（公安局户政窗口，5月5日）的评价：满意。")
        assert t.step == "idle" and t.ttl_seconds == 0

    @pytest.mark.parametrize("text", ["5", "非常满意", "4", "满意"])
    def test_good_ratings_are_never_followed_by_questions(self, world, text):
        world.invite(7)
        t = world.send(text)
        assert [type(e) for e in t.effects] == [RecordRating]
        assert len(t.replies) == 1 and not t.replies[0].choices
        assert world.timer_due is None

    @pytest.mark.parametrize(("text", "level"), [("5分", 5), ("4 分", 4), ("五分", 5), ("给5分", 5), ("2分", 2)])
    def test_a_score_is_a_rating(self, world, text, level):
        world.invite(7)
        t = world.send(text)
        assert t.effects[0] == RecordRating(7, level)
        assert world.reply != texts.HELP

    @pytest.mark.parametrize("text", ["50分", "5分钟", "13812341234"])
    def test_numbers_that_are_not_a_score_get_help(self, world, text):
        world.invite(7)
        t = world.send(text)
        assert t.effects == () and world.reply == texts.HELP

    def test_level_with_remark_keeps_the_words(self, world):
        world.invite(7)
        t = world.send("5 办得很快")
        assert t.effects == (RecordRating(7, 5), AttachReasons(7, (), "办得很快"))

    def test_nothing_to_rate(self, world):
        world.send("5")
        assert world.last.effects == ()
        assert world.reply == texts.NOTHING_TO_RATE
        assert "12345" in world.reply

    @pytest.mark.parametrize(("text", "question"), [("好评", texts.CLARIFY_GOOD), ("差评", texts.CLARIFY_BAD)])
    def test_good_or_bad_review_is_asked_back(self, world, text, question):
        world.invite(7)
        t = world.send(text)
        assert t.effects == () and world.reply == question
        assert t.step == "clarify" and t.ttl_seconds == QUESTION_TTL_SECONDS

    def test_clarified_level_keeps_the_first_words(self, world):
        world.invite(7)
        world.send("差评，太慢了")
        t = world.send("1")
        assert t.effects == (RecordRating(7, 1), AttachReasons(7, (), "太慢了"))

    def test_clarified_good_level(self, world):
        world.invite(7)
        world.send("好评")
        assert world.send("5").effects == (RecordRating(7, 5),)

    def test_longest_match_records_very_unsatisfied(self, world):
        world.invite(7)
        assert world.send("非常不满意").effects[0] == RecordRating(7, 1)

    def test_full_width_level(self, world):
        world.invite(7)
        assert world.send("４").effects == (RecordRating(7, 4),)


class TestSeveralInvitations:
    def test_asks_which_one_most_recent_first(self, world):
        for n in range(1, 8):  # invitation 7 is the newest
            world.invite(n, f"事项{n}", minutes_ago=100 - n)
        t = world.send("4")
        assert t.effects == () and t.step == "choose_invitation"
        reply = t.replies[0]
        assert [c.key for c in reply.choices] == ["1", "2", "3", "4", "5"]
        assert [c.data for c in reply.choices] == ["rt:7:4", "rt:6:4", "rt:5:4", "rt:4:4", "rt:3:4"]
        assert "「事项7」" in reply.choices[0].label
        assert t.state["candidates"] == [7, 6, 5, 4, 3] and t.state["level"] == 4

    def test_typed_choice_records_the_remembered_level(self, world):
        world.invite(1, "营业执照", minutes_ago=90)
        world.invite(2, "户籍迁移", minutes_ago=30)
        world.send("2 等了一上午")
        t = world.send("2")
        assert t.effects == (RecordRating(1, 2), AttachReasons(1, (), "等了一上午"))
        assert "「营业执照」" in world.reply

    def test_choice_out_of_range_is_asked_again(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, minutes_ago=30)
        world.send("5")
        t = world.send("7")
        assert t.effects == () and t.step == "choose_invitation"
        assert world.reply == texts.choose_out_of_range(2)

    def test_button_choice(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, minutes_ago=30)
        world.send("3")
        assert world.tap("rt:1:3").effects == (RecordRating(1, 3),)

    def test_new_level_words_restart_the_question(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, minutes_ago=30)
        world.send("5")
        t = world.send("满意")
        assert t.step == "choose_invitation" and t.state["level"] == 4

    def test_rated_meanwhile_elsewhere(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, minutes_ago=30)
        world.send("5")
        world.ratings[2] = Rating(4, world.now)  # rated on the web page
        t = world.send("1")
        assert t.effects == () and world.reply == texts.STALE_BUTTON


class TestReasons:
    def test_bad_rating_is_recorded_then_reasons_asked(self, world):
        world.invite(7)
        t = world.send("2")
        assert t.effects == (RecordRating(7, 2), ScheduleTimer(1800))
        reply = t.replies[0]
        assert reply.multi_select
        assert [c.data for c in reply.choices][:2] == ["rs:7:207", "rs:7:208"]
        assert reply.choices[-1].data == "rs:7:ok" and reply.choices[-1].key == ""
        assert t.state == {
            "v": 1,
            "step": "reasons",
            "invitation_id": 7,
            "level": 2,
            "selected": [],
            "reminded": False,
            "since": START.isoformat(),
        }
        assert t.ttl_seconds >= 1800

    @pytest.mark.parametrize("level", [1, 2])
    def test_reasons_list_fits_two_sms_segments(self, world, level):
        world.invite(7)
        reply = world.send(str(level)).replies[0]
        lead = texts.recorded(texts.service("户籍迁移", "公安局户政窗口", START.date() - timedelta(days=1)), level)
        question_and_list = plain_text(reply)[len(lead):]
        assert question_and_list.startswith(texts.ASK_REASONS)
        assert len(question_and_list) <= SMS_TWO_SEGMENTS
        assert len(plain_text(reply)) <= SMS_TWO_SEGMENTS  # with a typical service name, all of it

    @pytest.mark.parametrize(
        ("text", "codes", "words"),
        [
            ("1 3", (108, 110), ""),
            ("1,3", (108, 110), ""),
            ("13", (108, 110), ""),
            ("１３", (108, 110), ""),
            ("113 115", (113, 115), ""),
            ("1 3 窗口让我跑了三趟", (108, 110), "窗口让我跑了三趟"),
            ("窗口让我跑了三趟", (), "窗口让我跑了三趟"),
        ],
    )
    def test_reasons_attach(self, world, text, codes, words):
        world.invite(7)
        world.send("1")
        t = world.send(text)
        assert t.effects == (AttachReasons(7, codes, words), CancelTimer())
        assert t.step == "idle" and world.timer_due is None
        assert world.reply.startswith("已收到您对「户籍迁移」的意见")

    def test_numbers_outside_the_list_are_reported(self, world):
        world.invite(7)
        world.send("1")
        t = world.send("3 9")
        assert t.effects == ()
        assert "9" in world.reply and "1-8" in world.reply
        assert t.step == "reasons"
        assert world.send("3").effects == (AttachReasons(7, (110,), ""), CancelTimer())

    def test_code_of_the_other_level_is_reported(self, world):
        world.invite(7)
        world.send("1")
        t = world.send("113 209")
        assert t.effects == () and "209" in world.reply

    @pytest.mark.parametrize("text", ["", "👍", "。。。", "不满意"])
    def test_empty_answers_ask_again(self, world, text):
        world.invite(7)
        world.send("1")
        t = world.send(text)
        assert t.effects == () and world.reply == texts.REASONS_EMPTY and t.step == "reasons"

    def test_reminder_once_only(self, world):
        world.invite(7)
        world.send("2")
        assert world.timer_due == START + timedelta(seconds=1800)
        t = world.fire_timer()
        assert t.effects == ()  # no new timer: one reminder only
        assert t.replies[0].text.startswith("您对「户籍迁移」的评价为不满意。")
        assert t.replies[0].multi_select
        assert t.state["reminded"] is True
        world.timer_due = world.now  # a duplicate delivery of the timer
        t = world.fire_timer()
        assert t.replies == () and t.effects == ()
        # Reasons after the reminder still attach.
        assert world.send("1").effects == (AttachReasons(7, (207,), ""), CancelTimer())

    def test_no_reminder_once_reasons_came_elsewhere(self, world):
        world.invite(7)
        world.send("2")
        world.ratings[7].reasons_given = True  # the citizen used the rating page
        t = world.fire_timer()
        assert t.replies == () and t.step == "idle"

    def test_late_reasons_attach_when_state_was_lost(self, world):
        world.invite(7)
        world.send("2")
        world.wait(3 * 3600)
        world.lose_state()
        t = world.send("1 3 窗口让我跑了三趟")
        assert t.effects == (AttachReasons(7, (207, 209), "窗口让我跑了三趟"), CancelTimer())

    def test_late_reasons_after_state_expiry(self, world):
        world.invite(7)
        world.send("1")
        world.wait(STATE_TTL_SECONDS + 60)  # the stored state has expired
        assert world._stored_state() is None
        assert world.send("多头跑了好几趟").effects == (AttachReasons(7, (), "多头跑了好几趟"), CancelTimer())

    def test_late_wrong_number_keeps_asking_for_that_rating(self, world):
        world.invite(7)
        world.send("1")
        world.lose_state()
        t = world.send("9")
        assert t.effects == () and t.step == "reasons" and t.state["reminded"] is True
        assert world.send("6").effects == (AttachReasons(7, (113,), ""), CancelTimer())

    def test_late_level_words_are_not_reasons(self, world):
        world.invite(7)
        world.send("1")
        world.lose_state()
        t = world.send("不满意")
        assert t.effects == () and world.reply == texts.NOTHING_TO_RATE

    def test_new_invitation_takes_digits_but_text_still_reaches_old_reasons(self, world):
        world.invite(7, "户籍迁移")
        world.send("1")
        world.wait(600)
        world.invite(8, "营业执照", minutes_ago=1)  # a newer prompt supersedes the reasons question
        assert world.send("5").effects == (RecordRating(8, 5),)
        assert world.send("1 3").effects == (AttachReasons(7, (108, 110), ""), CancelTimer())

    def test_reasons_question_without_catalogue(self, world):
        world.invite(7)
        ctx = world.context()
        bare = Context(ctx.open_invitations, {})
        t = advance(None, Inbound("text", world.now, text="1"), bare)
        assert t.replies[0].choices == () and texts.ASK_REASONS_TEXT_ONLY in t.replies[0].text


class TestReasonButtons:
    def test_toggle_redraws_the_keyboard(self, world):
        world.invite(7)
        world.send("1")
        t = world.tap("rs:7:113")
        reply = t.replies[0]
        assert reply.edit_previous and reply.multi_select
        assert [c.data for c in reply.choices if c.selected] == ["rs:7:113"]
        assert t.state["selected"] == [113] and t.effects == ()
        t = world.tap("rs:7:108")
        assert t.state["selected"] == [113, 108]
        t = world.tap("rs:7:113")
        assert t.state["selected"] == [108]

    def test_submit(self, world):
        world.invite(7)
        world.send("1")
        world.tap("rs:7:113")
        world.tap("rs:7:115")
        t = world.tap("rs:7:ok")
        assert t.effects == (AttachReasons(7, (113, 115), ""), CancelTimer())
        assert "多头跑、态度差效率低" in world.reply

    def test_submit_with_nothing_ticked(self, world):
        world.invite(7)
        world.send("1")
        t = world.tap("rs:7:ok")
        assert t.effects == () and world.reply == texts.REASONS_PICK_FIRST and t.step == "reasons"

    def test_typed_words_join_the_ticked_reasons(self, world):
        world.invite(7)
        world.send("1")
        world.tap("rs:7:113")
        assert world.send("3 跑了三趟").effects == (AttachReasons(7, (113, 110), "跑了三趟"), CancelTimer())

    def test_toggle_after_lost_state_starts_afresh(self, world):
        world.invite(7)
        world.send("2")
        world.lose_state()
        t = world.tap("rs:7:209")
        assert t.state["selected"] == [209] and t.state["reminded"] is True
        assert world.tap("rs:7:ok").effects == (AttachReasons(7, (209,), ""), CancelTimer())

    def test_toggle_of_a_code_from_another_level(self, world):
        world.invite(7)
        world.send("1")
        t = world.tap("rs:7:209")
        assert t.effects == () and world.reply == texts.STALE_BUTTON
        assert t.state["selected"] == []


class TestStaffRating:
    @pytest.mark.parametrize("level", [3, 4, 5])
    def test_offered_after_good_window_rating(self, world, level):
        world.invite(7, window=True)
        t = world.send(str(level))
        assert t.effects == (RecordRating(7, level),) and t.step == "staff"
        assert [c.data for c in t.replies[0].choices] == [
            "st:7:5",
            "st:7:4",
            "st:7:3",
            "st:7:2",
            "st:7:1",
            "st:7:0",
        ]

    def test_not_offered_for_online_services(self, world):
        world.invite(7, window=False)
        assert world.send("5").step == "idle"

    @pytest.mark.parametrize("text", ["0", "跳过", "不用了"])
    def test_skip(self, world, text):
        world.invite(7, window=True)
        world.send("5")
        t = world.send(text)
        assert t.effects == () and world.reply == texts.STAFF_SKIPPED and t.step == "idle"

    def test_staff_level(self, world):
        world.invite(7, window=True)
        world.send("5")
        assert world.send("4").effects == (RecordStaffRating(7, 4),)
        assert world.ratings[7].staff_level == 4

    def test_other_text_ends_the_optional_question(self, world):
        world.invite(7, window=True)
        world.send("5")
        t = world.send("谢谢")
        assert t.effects == () and t.step == "idle"

    def test_after_reasons_on_a_window_case(self, world):
        world.invite(7, window=True)
        world.send("1")
        t = world.send("6")
        assert t.effects == (AttachReasons(7, (113,), ""), CancelTimer())
        assert t.step == "staff" and texts.ASK_STAFF in world.reply
        assert world.tap("st:7:2").effects == (RecordStaffRating(7, 2),)

    def test_bad_rating_with_words_goes_straight_to_staff(self, world):
        world.invite(7, window=True)
        t = world.send("2 窗口让我跑了三趟")
        assert t.effects == (RecordRating(7, 2), AttachReasons(7, (), "窗口让我跑了三趟"))
        assert t.step == "staff" and world.timer_due is None

    def test_skip_button(self, world):
        world.invite(7, window=True)
        world.send("4")
        t = world.tap("st:7:0")
        assert t.effects == () and t.step == "idle"


class TestSurvey:
    @pytest.mark.parametrize("text", ["1", "满意"])
    def test_satisfied(self, world, text):
        world.survey(3)
        t = world.send(text)
        assert t.effects == (RecordSurveyAnswer(3, True),)
        assert world.reply == texts.SURVEY_SATISFIED and t.step == "idle"

    def test_not_satisfied_with_words(self, world):
        world.survey(3)
        t = world.send("不满意，还是没人管")
        assert t.effects == (RecordSurveyAnswer(3, False), AttachSurveyReason(3, "还是没人管"))

    def test_not_satisfied_then_reason(self, world):
        world.survey(3)
        t = world.send("2")
        assert t.effects == (RecordSurveyAnswer(3, False),) and t.step == "survey_reason"
        assert world.reply == texts.SURVEY_ASK_REASON
        assert world.send("1").effects == ()  # a digit is no reason
        assert world.send("还是没人管").effects == (AttachSurveyReason(3, "还是没人管"),)
        assert world.survey_reasons == {3: "还是没人管"}

    def test_survey_buttons(self, world):
        world.survey(3)
        assert world.tap("sv:3:2").effects == (RecordSurveyAnswer(3, False),)
        assert world.last.step == "survey_reason"

    def test_survey_newer_than_invitation_takes_plain_digits(self, world):
        world.invite(7, minutes_ago=120)
        world.survey(3, minutes_ago=10)
        assert world.send("1").effects == (RecordSurveyAnswer(3, True),)

    def test_invitation_newer_than_survey_takes_plain_digits(self, world):
        world.survey(3, minutes_ago=120)
        world.invite(7, minutes_ago=10)
        assert world.send("1").effects[0] == RecordRating(7, 1)

    def test_answer_that_does_not_fit_the_survey_goes_to_the_invitation(self, world):
        world.invite(7, minutes_ago=120)
        world.survey(3, minutes_ago=10)
        assert world.send("4").effects == (RecordRating(7, 4),)

    def test_garbage_with_an_open_survey(self, world):
        world.survey(3)
        t = world.send("啥意思")
        assert t.effects == () and world.reply == texts.HELP


class TestButtons:
    def test_a_tap_that_answers_its_question_says_so(self, world):
        # The bot closes a keyboard when the conversation says the tap answered it, whatever the reply says.
        world.invite(7, window=True)
        world.invite(8)
        world.survey(3)
        assert world.tap("rt:8:1").answered  # a rating
        assert not world.tap("rs:8:ok").answered  # nothing ticked yet: asked to pick first
        assert not world.tap("rs:8:113").answered  # a tick redraws the list
        assert world.tap("rs:8:ok").answered  # the ticked reasons
        assert world.tap("rt:7:5").answered
        skip = world.tap("st:7:0")
        assert skip.answered and skip.effects == ()  # the skip records nothing and still answers
        assert world.tap("sv:3:1").answered
        assert not world.send("5").answered  # typed text has no keyboard to close

    @pytest.mark.parametrize("data", ["rt:999:1", "rs:999:113", "rs:999:ok", "st:999:5", "sv:999:1"])
    def test_ids_not_in_the_context_record_nothing(self, world, data):
        # Forged callback data names someone else's invitation: the runner loaded only this citizen's.
        world.invite(7, window=True)
        world.survey(3)
        t = world.tap(data)
        assert t.effects == () and world.reply == texts.STALE_BUTTON
        assert not t.answered  # the keyboard stays open

    @pytest.mark.parametrize(
        "data", ["", "rt:7:9", "rt:7", "rt:7:5:1", "rt:07:5", "xx:7:5", "rt:7:5 ", "rt:7:５", "rt:" + "9" * 70 + ":5"]
    )
    def test_malformed_data(self, world, data):
        world.invite(7)
        t = world.tap(data)
        assert t.effects == () and world.reply == texts.STALE_BUTTON

    def test_stale_button_keeps_the_question(self, world):
        world.invite(7)
        world.send("1")
        t = world.tap("rt:7:5")  # already rated
        assert t.effects == () and t.step == "reasons"

    def test_staff_button_for_a_service_without_staff_rating(self, world):
        world.invite(7, window=False)
        world.send("5")
        assert world.tap("st:7:5").effects == ()

    def test_rating_button(self, world):
        world.invite(7)
        assert world.tap("rt:7:2").effects == (RecordRating(7, 2), ScheduleTimer(1800))


class TestKeywords:
    def test_opt_out_at_any_step(self, world):
        world.invite(7)
        world.send("1")
        t = world.send("TD")
        assert t.effects == (OptOut(), CancelTimer()) and t.step == "idle"
        assert world.reply == texts.OPTED_OUT and world.opted_out and world.timer_due is None

    @pytest.mark.parametrize("text", ["STOP", "T", "R", "退订", "unsubscribe"])
    def test_opt_out_words(self, world, text):
        assert world.send(text).effects == (OptOut(), CancelTimer())

    @pytest.mark.parametrize("text", ["START", "开通", "UNSTOP"])
    def test_opt_in(self, world, text):
        world.send("TD")
        assert world.send(text).effects == (OptIn(),)
        assert not world.opted_out

    def test_help_keeps_the_question(self, world):
        world.invite(7)
        world.send("1")
        t = world.send("帮助")
        assert world.reply == texts.HELP and t.step == "reasons" and t.effects == ()


class TestRobustness:
    @pytest.mark.parametrize(
        "text",
        ["", "   ", "😀😀", "你好", "x" * 5000, "\x00\x01\x1b[31m", "Мне не понравилось 😡 ok", "\u202e\u200b", "١٢٣", "🙂 5"],
    )
    def test_anything_gets_a_short_help_reply(self, world, text):
        world.invite(7)
        t = world.send(text)
        assert t.effects == ()
        assert len(t.replies) == 1 and t.replies[0].text == texts.HELP

    @pytest.mark.parametrize(
        "state",
        [
            None,
            {},
            "reasons",
            {"v": 2, "step": "reasons", "invitation_id": 7, "level": 1, "selected": [], "reminded": False},
            {"v": 1, "step": "reasons"},
            {"v": 1, "step": "reasons", "invitation_id": True, "level": 1, "selected": [], "reminded": False,
             "since": START.isoformat()},
            {"v": 1, "step": "reasons", "invitation_id": 7, "level": 1, "selected": [], "reminded": False,
             "since": "2026-05-06T02:00:00"},
            {"v": 1, "step": "choose_invitation", "level": 9, "candidates": [1], "text": "", "since": START.isoformat()},
            {"v": 1, "step": "choose_invitation", "level": 2, "candidates": [], "text": "", "since": START.isoformat()},
            {"v": 1, "step": "dance", "since": START.isoformat()},
            {"v": 1, "step": "staff", "invitation_id": "7", "since": "yesterday"},
        ],
    )
    def test_unknown_or_corrupt_state_is_idle(self, world, state):
        world.invite(7)
        t = advance(state, Inbound("text", world.now, text="4"), world.context())
        assert t.effects == (RecordRating(7, 4),)

    def test_naive_time_is_refused_at_the_edge(self):
        with pytest.raises(ValueError):
            Inbound("text", datetime(2026, 5, 6, 10, 0), text="5")

    def test_states_are_json(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, window=True, minutes_ago=30)
        for text in ["2 慢", "1", "3", "好评", "5"]:
            t = world.send(text)
            assert json.loads(json.dumps(t.state)) == t.state

    def test_superseded_question(self, world):
        world.invite(1, minutes_ago=90)
        world.invite(2, minutes_ago=30)
        world.send("5")  # which one?
        world.wait(60)
        world.invite(3, "营业执照", minutes_ago=0)
        # "1" now answers the newest prompt: a rating of 1 on one of three, not a pick from the old list.
        t = world.send("1")
        assert t.step == "choose_invitation" and t.state["level"] == 1 and t.state["candidates"][0] == 3


class TestPrompts:
    def test_rating_prompt(self, world):
        ref = world.invite(7, "户籍迁移", "公安局户政窗口")
        reply = rating_prompt(ref)
        assert [c.data for c in reply.choices] == ["rt:7:5", "rt:7:4", "rt:7:3", "rt:7:2", "rt:7:1"]
        text = plain_text(reply)
        assert "5.非常满意" in text and len(text) <= SMS_TWO_SEGMENTS
        assert "好评" not in text  # neutral: never asks for a good rating

    def test_survey_prompt(self, world):
        reply = survey_prompt(world.survey(3, "户籍迁移"))
        assert [c.data for c in reply.choices] == ["sv:3:1", "sv:3:2"]
        assert len(plain_text(reply)) <= SMS_TWO_SEGMENTS

    def test_bot_labels(self):
        from conversations import Choice, button_label

        assert button_label(Choice("多头跑", "rs:7:113", True, "6"), multi_select=True) == "✅ 6 多头跑"
        assert button_label(Choice("多头跑", "rs:7:113", False, "6"), multi_select=True) == "6 多头跑"
        assert button_label(Choice("提交", "rs:7:ok"), multi_select=True) == "提交"


def test_every_text_is_neutral():
    # Messaging conduct: no text may ask for a good rating.
    for name in dir(texts):
        value = getattr(texts, name)
        if isinstance(value, str):
            assert "好评" not in value, name


def test_catalogue_fixture_matches_design():
    assert [o.code for o in CATALOGUE[1]] == list(range(108, 116))
    assert [o.code for o in CATALOGUE[2]] == list(range(207, 215))
