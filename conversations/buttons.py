"""The bot's button payloads: short, self-describing, and checked against the context on every tap.

Grammar (ASCII, at most 64 bytes, Telegram's callback_data limit; ids are positive integers):

    rt:<invitation_id>:<level>     rate a service, level 1-5
    rs:<invitation_id>:<code>      toggle a preset reason of that rating
    rs:<invitation_id>:ok          submit the ticked reasons
    st:<invitation_id>:<level>     rate the window staff member, level 1-5, 0 = skip
    sv:<ticket_id>:<1|2>           callback survey: 1 satisfied, 2 not satisfied

A payload names the invitation or ticket it is about, so a keyboard left from an earlier message
can never act on another service. Payloads are not secrets: the flow acts on an id only when the
runner loaded it for this citizen, which makes forged data harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DATA_BYTES = 64
_ID = r"([1-9][0-9]{0,17})"


@dataclass(frozen=True)
class RateButton:
    invitation_id: int
    level: int


@dataclass(frozen=True)
class ReasonToggle:
    invitation_id: int
    code: int


@dataclass(frozen=True)
class ReasonSubmit:
    invitation_id: int


@dataclass(frozen=True)
class StaffButton:
    invitation_id: int
    level: int  # 0 skips


@dataclass(frozen=True)
class SurveyButton:
    ticket_id: int
    satisfied: bool


Button = RateButton | ReasonToggle | ReasonSubmit | StaffButton | SurveyButton

_PATTERNS: tuple[tuple[re.Pattern[str], type], ...] = (
    (re.compile(rf"rt:{_ID}:([1-5])"), RateButton),
    (re.compile(rf"rs:{_ID}:ok"), ReasonSubmit),
    (re.compile(rf"rs:{_ID}:([1-9][0-9]{{0,8}})"), ReasonToggle),
    (re.compile(rf"st:{_ID}:([0-5])"), StaffButton),
    (re.compile(rf"sv:{_ID}:([12])"), SurveyButton),
)


def parse_button(data: object) -> Button | None:
    """Read a payload; anything malformed, oversized or unknown is None."""
    if not isinstance(data, str) or not data.isascii() or len(data) > MAX_DATA_BYTES:
        return None
    for pattern, kind in _PATTERNS:
        match = pattern.fullmatch(data)
        if match is None:
            continue
        numbers = [int(g) for g in match.groups()]
        if kind is SurveyButton:
            return SurveyButton(numbers[0], numbers[1] == 1)
        return kind(*numbers)
    return None


def _checked(data: str) -> str:
    if len(data.encode()) > MAX_DATA_BYTES:
        raise ValueError(f"button data longer than {MAX_DATA_BYTES} bytes")
    return data


def rate_data(invitation_id: int, level: int) -> str:
    """rt:<invitation_id>:<level>"""
    return _checked(f"rt:{int(invitation_id)}:{int(level)}")


def reason_toggle_data(invitation_id: int, code: int) -> str:
    """rs:<invitation_id>:<code>"""
    return _checked(f"rs:{int(invitation_id)}:{int(code)}")


def reason_submit_data(invitation_id: int) -> str:
    """rs:<invitation_id>:ok"""
    return _checked(f"rs:{int(invitation_id)}:ok")


def staff_data(invitation_id: int, level: int) -> str:
    """st:<invitation_id>:<level>, 0 = skip"""
    return _checked(f"st:{int(invitation_id)}:{int(level)}")


def survey_data(ticket_id: int, satisfied: bool) -> str:
    """sv:<ticket_id>:1 (satisfied) or :2"""
    return _checked(f"sv:{int(ticket_id)}:{1 if satisfied else 2}")


__all__ = [
    "MAX_DATA_BYTES",
    "Button",
    "RateButton",
    "ReasonSubmit",
    "ReasonToggle",
    "StaffButton",
    "SurveyButton",
    "parse_button",
    "rate_data",
    "reason_submit_data",
    "reason_toggle_data",
    "staff_data",
    "survey_data",
]
