"""Reading what citizens type: levels, reasons, survey answers, keywords (DESIGN §5, reply grammar).

Every function takes text that went through `clean()` and never raises on any input. The parsers are
deliberately strict where a wrong reading would record something: an evaluation cannot be changed once
recorded (Art. 19), while a question back costs one message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from conversations.model import ReasonOption

MAX_TEXT_CHARS = 1000  # free text kept from one message
_RAW_SCAN_CHARS = 4 * MAX_TEXT_CHARS  # NFKC can expand text; bound the work before it

LEVEL_WORDS: dict[int, str] = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
BAD_LEVELS = frozenset({1, 2})

# Longest first: "非常不满意" contains "不满意", which contains "满意".
_LEVEL_PHRASES: tuple[tuple[str, int], ...] = (
    ("非常不满意", 1),
    ("非常满意", 5),
    ("基本满意", 3),
    ("不满意", 2),
    ("满意", 4),
    ("一般", 3),
)
_AMBIGUOUS_PHRASES: tuple[tuple[str, Literal["good", "bad"]], ...] = (("好评", "good"), ("差评", "bad"))

# "5分", "4 分", "五分", "给5分", "打4星", "五颗星": a level given as a score. One digit or numeral only
# ("50分" is not a level), and the unit must end the token ("5分钟" is a duration, "一分钱" money).
_CHINESE_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_SCORE = re.compile(r"(?:给|打|评)?\s?([1-5一二两三四五])\s?(?:分|颗星|星)")

# Whole-message keywords, compared after NFKC and casefold. Opt-out also takes Twilio's default
# keywords: a citizen who says stop in any of the usual ways is never messaged again.
OPT_OUT_WORDS = frozenset(
    {"stop", "td", "t", "退订", "r", "unsubscribe", "stopall", "cancel", "end", "quit", "optout", "revoke", "取消订阅"}
)
OPT_IN_WORDS = frozenset({"start", "开通", "unstop"})
HELP_WORDS = frozenset({"help", "帮助", "?", "info"})

SKIP_WORDS = frozenset({"0", "跳过", "不用", "不用了", "不评", "不评价", "skip"})

Keyword = Literal["opt_out", "opt_in", "help"]


def clean(raw: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Normalise an inbound text: NFKC (full-width digits, commas, spaces), no control characters, capped."""
    if not isinstance(raw, str):
        return ""
    text = unicodedata.normalize("NFKC", raw[:_RAW_SCAN_CHARS])
    kept: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            kept.append(" ")  # line breaks and tabs separate words; other controls go too
        elif category in ("Cf", "Cs", "Co"):
            # Format characters (zero-width, bidi overrides) can hide or reorder text in a clerk's
            # view; lone surrogates cannot be encoded for storage.
            continue
        else:
            kept.append(ch)
    return re.sub(r"\s+", " ", "".join(kept)).strip()[:limit]


def is_separator(ch: str) -> bool:
    """Whitespace, punctuation and symbols (emoji included) separate a number or level from text."""
    return ch.isspace() or unicodedata.category(ch)[0] in ("P", "S")


def has_content(text: str) -> bool:
    """True when the text holds a letter or a number, not only punctuation and emoji."""
    return any(unicodedata.category(ch)[0] in ("L", "N") for ch in text)


def _rest(text: str, start: int) -> str | None:
    """The text after a token that ends at `start`, or None when the token runs on into other text."""
    if start < len(text) and not is_separator(text[start]):
        return None
    return _strip_separators(text[start:])


def _strip_separators(text: str) -> str:
    start, end = 0, len(text)
    while start < end and is_separator(text[start]):
        start += 1
    while end > start and is_separator(text[end - 1]):
        end -= 1
    return text[start:end]


def _remark(text: str) -> str:
    """Free text kept with an answer; punctuation or emoji alone carry nothing."""
    return text if has_content(text) else ""


def keyword(text: str) -> Keyword | None:
    """STOP/退订/TD…, START/开通, HELP/帮助/? as the whole message, in any case or width."""
    word = _strip_separators(text).casefold()
    if not word:
        word = text.strip()  # "?" alone is all punctuation
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    if word in HELP_WORDS:
        return "help"
    return None


@dataclass(frozen=True)
class LevelAnswer:
    level: int
    text: str = ""  # free text after the level ("2 窗口让我跑了三趟")


@dataclass(frozen=True)
class AmbiguousLevel:
    """好评 or 差评: which of the levels is meant must be asked."""

    group: Literal["good", "bad"]
    text: str = ""


def parse_level(text: str) -> LevelAnswer | AmbiguousLevel | None:
    """A level 1-5 as a digit, a score ("5分", "给4分", "五星") or its words at the start of the message,
    optionally followed by text.

    The digit or words must stand alone or be followed by a space or punctuation: "2 太慢了" is level 2
    with a remark, while "1楼窗口…" or "13" are not levels, and "1 3" is a list of numbers.
    """
    text = text.strip()
    if not text:
        return None
    score = _SCORE.match(text)
    if score is not None:
        rest = _rest(text, score.end())
        if rest is None or rest[:1].isascii() and rest[:1].isdigit():
            return None
        digit = score.group(1)
        return _level_answer(_CHINESE_DIGITS.get(digit) or int(digit), rest)
    if text[0] in "12345":
        rest = _rest(text, 1)
        if rest is None or rest[:1].isascii() and rest[:1].isdigit():
            return None
        return _level_answer(int(text[0]), rest)
    for phrase, level in _LEVEL_PHRASES:
        if text.startswith(phrase):
            rest = _rest(text, len(phrase))
            if rest is None:
                return None
            return _level_answer(level, rest)
    for phrase, group in _AMBIGUOUS_PHRASES:
        if text.startswith(phrase):
            rest = _rest(text, len(phrase))
            if rest is None:
                return None
            return AmbiguousLevel(group, _remark(rest))
    return None


def _level_answer(level: int, rest: str) -> LevelAnswer:
    # "1 非常不满意" or "满意 满意" say the level twice; that is not a remark.
    if rest in (LEVEL_WORDS[level], str(level)):
        rest = ""
    return LevelAnswer(level, _remark(rest))


def is_rating_words(text: str) -> bool:
    """Level words or 好评/差评 and nothing else ("不满意"): a rating, not a reason, however read.

    A bare digit is not included: after a list of reasons, "5" is the fifth reason; "5分" is a rating.
    """
    text = text.strip()
    answer = parse_level(text)
    return answer is not None and not answer.text and not _strip_separators(text).isdigit()


@dataclass(frozen=True)
class ReasonsAnswer:
    codes: tuple[int, ...]  # catalogue codes, in the order given, without repeats
    text: str  # the citizen's own words
    unknown: tuple[str, ...] = ()  # numbers that are not on the list, as typed

    @property
    def has_content(self) -> bool:
        return bool(self.codes or self.text)


_NUMBER = re.compile(r"[0-9]+")
_MAX_TOKEN_DIGITS = 6  # longer runs are not numbers anyone meant to pick; never int() them


def parse_reasons(text: str, options: Sequence[ReasonOption], *, other_codes: Iterable[int] = ()) -> ReasonsAnswer:
    """Reason list numbers or catalogue codes at the start, then free text; or free text alone.

    "1 3", "1,3", "1、3" and "13" (lists of up to 9 items: each digit is a number) pick items 1 and 3;
    "113 209" are catalogue codes; "1 3 窗口让我跑了三趟" adds the words. Codes of other levels
    (`other_codes`) and numbers outside the list come back in `unknown`. Numbers running straight on
    into text ("13窗口…", "2023年…") are part of the text.
    """
    text = text.strip()
    end = 0
    while end < len(text) and (text[end].isascii() and text[end].isdigit() or is_separator(text[end])):
        end += 1
    prefix, rest = text[:end], text[end:]
    tokens = _NUMBER.findall(prefix)
    if not tokens or (rest and not is_separator(prefix[-1])):
        return ReasonsAnswer((), _remark(text))
    by_code = {o.code: o for o in options}
    foreign = set(other_codes) - set(by_code)
    picked: list[int] = []
    unknown: list[str] = []

    def pick(number: int, typed: str) -> None:
        if 1 <= number <= len(options):
            code = options[number - 1].code
            if code not in picked:
                picked.append(code)
        elif typed not in unknown:
            unknown.append(typed)

    for token in tokens:
        if len(token) > _MAX_TOKEN_DIGITS:
            if token[:_MAX_TOKEN_DIGITS] + "…" not in unknown:
                unknown.append(token[:_MAX_TOKEN_DIGITS] + "…")
            continue
        value = int(token)
        if value in by_code:
            if value not in picked:
                picked.append(value)
        elif value in foreign:
            if token not in unknown:
                unknown.append(token)
        elif len(token) > 1 and len(options) <= 9:
            for digit in token:
                pick(int(digit), digit)
        else:
            pick(value, token)
    return ReasonsAnswer(tuple(picked), _remark(_strip_separators(rest)), tuple(unknown))


@dataclass(frozen=True)
class SurveyAnswer:
    satisfied: bool
    text: str = ""


_SURVEY_PHRASES: tuple[tuple[str, bool], ...] = (
    ("非常不满意", False),
    ("非常满意", True),
    ("基本满意", True),
    ("不满意", False),
    ("满意", True),
)


def parse_survey(text: str) -> SurveyAnswer | None:
    """A callback answer: "1"/满意 or "2"/不满意, optionally followed by text ("不满意，还是没人管")."""
    text = text.strip()
    if not text:
        return None
    if text[0] in "12":
        rest = _rest(text, 1)
        if rest is None or rest[:1].isascii() and rest[:1].isdigit():
            return None
        return SurveyAnswer(text[0] == "1", _remark(rest))
    for phrase, satisfied in _SURVEY_PHRASES:
        if text.startswith(phrase):
            rest = _rest(text, len(phrase))
            if rest is None:
                return None
            return SurveyAnswer(satisfied, _remark(rest))
    return None


def parse_number(text: str) -> int | None:
    """A bare number (a pick from a numbered list), or None."""
    word = _strip_separators(text)
    if 0 < len(word) <= 3 and word.isascii() and word.isdigit():
        return int(word)
    return None


def parse_staff(text: str) -> int | None:
    """A staff-member level 1-5 (digit or words), 0 for skip (0, 跳过, 不用…), or None."""
    word = _strip_separators(text)
    if word.casefold() in SKIP_WORDS:
        return 0
    answer = parse_level(word)
    if isinstance(answer, LevelAnswer) and not answer.text:
        return answer.level
    return None


__all__ = [
    "BAD_LEVELS",
    "LEVEL_WORDS",
    "MAX_TEXT_CHARS",
    "AmbiguousLevel",
    "LevelAnswer",
    "ReasonsAnswer",
    "SurveyAnswer",
    "clean",
    "has_content",
    "is_rating_words",
    "is_separator",
    "keyword",
    "parse_level",
    "parse_number",
    "parse_reasons",
    "parse_staff",
    "parse_survey",
]
