import pytest
from conversation_world import CATALOGUE

from conversations.parsing import (
    MAX_TEXT_CHARS,
    AmbiguousLevel,
    LevelAnswer,
    ReasonsAnswer,
    SurveyAnswer,
    clean,
    has_content,
    is_rating_words,
    keyword,
    parse_level,
    parse_number,
    parse_reasons,
    parse_staff,
    parse_survey,
)

LEVEL1 = CATALOGUE[1]  # 108 … 115
ALL_CODES = {o.code for options in CATALOGUE.values() for o in options}


def reasons(text: str, level: int = 1) -> ReasonsAnswer:
    return parse_reasons(clean(text), CATALOGUE[level], other_codes=ALL_CODES)


class TestClean:
    def test_full_width_digits_commas_and_spaces(self):
        assert clean("１３") == "13"
        assert clean("１，３") == "1,3"
        assert clean("1\u30003") == "1 3"  # ideographic space

    def test_control_and_invisible_characters_go(self):
        assert clean("1\x00\x07 3") == "1 3"
        assert clean("不满\u200b意") == "不满意"  # zero-width space
        assert clean("\u202e5") == "5"  # right-to-left override
        assert clean("a\r\n\tb") == "a b"

    def test_length_is_capped(self):
        assert len(clean("慢" * 5000)) == MAX_TEXT_CHARS

    def test_not_a_string(self):
        assert clean(None) == ""
        assert clean(b"5") == ""

    def test_lone_surrogate_is_dropped(self):
        assert clean("5\ud800") == "5"


class TestLevel:
    @pytest.mark.parametrize(
        ("text", "level"),
        [("5", 5), ("4", 4), ("3", 3), ("2", 2), ("1", 1), ("５", 5), (" 1。", 1), ("2!", 2)],
    )
    def test_digit(self, text, level):
        assert parse_level(clean(text)) == LevelAnswer(level)

    @pytest.mark.parametrize(
        ("text", "level"),
        [("非常满意", 5), ("满意", 4), ("基本满意", 3), ("一般", 3), ("不满意", 2), ("非常不满意", 1)],
    )
    def test_words(self, text, level):
        assert parse_level(text) == LevelAnswer(level)

    def test_longest_match_first(self):
        # "非常不满意" contains both "不满意" and "满意".
        assert parse_level("非常不满意").level == 1
        assert parse_level("不满意").level == 2
        assert parse_level("非常不满意，太慢了") == LevelAnswer(1, "太慢了")

    def test_level_with_text(self):
        assert parse_level(clean("2 窗口让我跑了三趟")) == LevelAnswer(2, "窗口让我跑了三趟")
        assert parse_level(clean("５，很好")) == LevelAnswer(5, "很好")

    def test_repeated_level_is_not_a_remark(self):
        assert parse_level("1 非常不满意") == LevelAnswer(1)
        assert parse_level("5 👍") == LevelAnswer(5)

    @pytest.mark.parametrize("text", ["1 3", "1,3", "13", "0", "6", "1楼窗口人太多", "满意度", "一般般", "", "很满意", "我不满意"])
    def test_not_a_level(self, text):
        assert parse_level(clean(text)) is None

    @pytest.mark.parametrize(
        ("text", "level"),
        [("5分", 5), ("4 分", 4), ("五分", 5), ("给5分", 5), ("打4分", 4), ("３分", 3), ("5星", 5), ("五颗星", 5),
         ("两分", 2), ("一分", 1), ("5分。", 5), ("给 5 分", 5)],
    )
    def test_score(self, text, level):
        assert parse_level(clean(text)) == LevelAnswer(level)

    def test_score_with_text(self):
        assert parse_level(clean("2分，窗口让我跑了三趟")) == LevelAnswer(2, "窗口让我跑了三趟")
        assert parse_level(clean("5分 非常满意")) == LevelAnswer(5)

    @pytest.mark.parametrize(
        "text", ["50分", "5分钟", "5 分钟就办好了", "五分钟", "一分钱没花", "0分", "6分", "10分", "13812341234", "5分5"],
    )
    def test_not_a_score(self, text):
        assert parse_level(clean(text)) is None

    def test_good_and_bad_review_are_ambiguous(self):
        assert parse_level("好评") == AmbiguousLevel("good")
        assert parse_level("差评，太慢") == AmbiguousLevel("bad", "太慢")

    def test_rating_words(self):
        assert is_rating_words("不满意")
        assert is_rating_words("差评")
        assert not is_rating_words("5")  # after a reasons list, a digit is a list number
        assert is_rating_words("5分")  # a score is not a list number
        assert not is_rating_words("不满意，还是没人管")


class TestKeyword:
    @pytest.mark.parametrize("text", ["STOP", "stop", "Ｓｔｏｐ", "TD", "td", "T", "R", "退订", "UNSUBSCRIBE", " stop. "])
    def test_opt_out(self, text):
        assert keyword(clean(text)) == "opt_out"

    @pytest.mark.parametrize("text", ["START", "start", "开通", "UNSTOP"])
    def test_opt_in(self, text):
        assert keyword(clean(text)) == "opt_in"

    @pytest.mark.parametrize("text", ["HELP", "help", "帮助", "?", "？"])
    def test_help(self, text):
        assert keyword(clean(text)) == "help"

    @pytest.mark.parametrize("text", ["stop sending", "TDD", "退订了吗", "5", ""])
    def test_only_the_whole_message(self, text):
        assert keyword(clean(text)) is None


class TestReasons:
    @pytest.mark.parametrize("text", ["1 3", "1,3", "1，3", "1、3", "13", "１３", "1 3。", "1;3"])
    def test_list_numbers(self, text):
        assert reasons(text) == ReasonsAnswer((108, 110), "")

    def test_catalogue_codes(self):
        assert reasons("113 115") == ReasonsAnswer((113, 115), "")

    def test_the_last_number_of_the_list_is_an_item(self):
        last = len(LEVEL1)
        assert reasons(str(last)) == ReasonsAnswer((LEVEL1[-1].code,), "")
        assert reasons(str(last + 1)).codes == ()

    def test_code_of_another_level_is_reported(self):
        assert reasons("113 209") == ReasonsAnswer((113,), "", ("209",))
        assert reasons("113 209", level=2) == ReasonsAnswer((209,), "", ("113",))

    def test_numbers_then_text(self):
        assert reasons("1 3 窗口让我跑了三趟") == ReasonsAnswer((108, 110), "窗口让我跑了三趟")
        assert reasons("6，窗口让我跑了三趟") == ReasonsAnswer((113,), "窗口让我跑了三趟")

    def test_text_alone(self):
        assert reasons("窗口让我跑了三趟") == ReasonsAnswer((), "窗口让我跑了三趟")
        assert reasons("跑了3趟还没办成") == ReasonsAnswer((), "跑了3趟还没办成")

    def test_numbers_running_into_text_are_text(self):
        assert reasons("13窗口让我跑了") == ReasonsAnswer((), "13窗口让我跑了")
        assert reasons("2023年办的") == ReasonsAnswer((), "2023年办的")

    def test_out_of_range_numbers_are_reported(self):
        assert reasons("9") == ReasonsAnswer((), "", ("9",))
        assert reasons("0") == ReasonsAnswer((), "", ("0",))
        assert reasons("19") == ReasonsAnswer((108,), "", ("9",))
        assert reasons("1 12") == ReasonsAnswer((108, 109), "")  # short list: "12" is 1 and 2

    def test_long_lists_read_whole_numbers(self):
        options = CATALOGUE[1] + CATALOGUE[2]  # 16 items
        assert parse_reasons("12 3", options) == ReasonsAnswer((210, 110), "")
        assert parse_reasons("17", options) == ReasonsAnswer((), "", ("17",))

    def test_repeats_once(self):
        assert reasons("1 1 3 1") == ReasonsAnswer((108, 110), "")

    def test_huge_numbers_are_not_converted(self):
        answer = reasons("9" * 5000)
        assert answer.codes == () and answer.unknown == ("999999…",)

    def test_empty_and_punctuation_only(self):
        assert not reasons("").has_content
        assert not reasons("。。。👍").has_content


class TestSurvey:
    @pytest.mark.parametrize("text", ["1", "满意", "非常满意", "基本满意", "1 好多了"])
    def test_satisfied(self, text):
        assert parse_survey(text).satisfied is True

    def test_not_satisfied_with_words(self):
        assert parse_survey(clean("不满意，还是没人管")) == SurveyAnswer(False, "还是没人管")
        assert parse_survey("2") == SurveyAnswer(False, "")
        assert parse_survey("非常不满意") == SurveyAnswer(False, "")

    @pytest.mark.parametrize("text", ["3", "12", "", "还行吧", "满意度"])
    def test_not_an_answer(self, text):
        assert parse_survey(text) is None


class TestSmallAnswers:
    def test_staff(self):
        assert parse_staff("0") == 0
        assert parse_staff("跳过") == 0
        assert parse_staff("SKIP") == 0
        assert parse_staff("4") == 4
        assert parse_staff("非常满意") == 5
        assert parse_staff("1 3") is None
        assert parse_staff("6") is None

    def test_number(self):
        assert parse_number("2") == 2
        assert parse_number(" 2。") == 2
        assert parse_number("2 3") is None
        assert parse_number("1234") is None
        assert parse_number("٣") is None  # only ASCII digits are numbers here

    def test_has_content(self):
        assert has_content("a")
        assert has_content("慢")
        assert not has_content("!!!👍")
