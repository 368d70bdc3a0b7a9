"""The conversation's steps and their JSON form, the dict kept in the state store.

Every stored state carries "v" (format version), "step" and, except idle, "since": when the question
of that step was sent. Anything that does not read back exactly as written here (an unknown version
or step, a missing or mistyped field) is treated as idle: losing a half-finished dialogue is harmless
because the context still knows what is open, while acting on a corrupt one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from conversations.parsing import clean

STATE_VERSION = 1
MAX_CANDIDATES = 5  # services offered in one "which one?" question
MAX_SELECTED = 64


@dataclass(frozen=True)
class Idle:
    pass


@dataclass(frozen=True)
class Choosing:
    """A level was given while several services are open: which one is it for?"""

    level: int
    candidates: tuple[int, ...]  # invitation ids, in the order listed (1 = first)
    text: str
    since: datetime


@dataclass(frozen=True)
class Clarifying:
    """好评/差评 was sent: the question back asks for the level."""

    text: str
    since: datetime


@dataclass(frozen=True)
class AwaitingReasons:
    """A bad rating is recorded; its reasons (Art. 8) are asked for. `selected` holds ticked buttons."""

    invitation_id: int
    level: int
    selected: tuple[int, ...]
    reminded: bool
    since: datetime


@dataclass(frozen=True)
class AwaitingStaff:
    """A window service is rated; the optional staff rating (Art. 7) is offered."""

    invitation_id: int
    since: datetime


@dataclass(frozen=True)
class AwaitingSurveyReason:
    """A callback survey was answered 不满意 without words; a short reason is asked for."""

    ticket_id: int
    since: datetime


Step = Idle | Choosing | Clarifying | AwaitingReasons | AwaitingStaff | AwaitingSurveyReason

IDLE = Idle()


def dump(step: Step) -> dict[str, Any]:
    """The JSON-able dict for a step."""
    if isinstance(step, Idle):
        return {"v": STATE_VERSION, "step": "idle"}
    since = step.since.astimezone(timezone.utc).isoformat()
    if isinstance(step, Choosing):
        body: dict[str, Any] = {
            "step": "choose_invitation",
            "level": step.level,
            "candidates": list(step.candidates),
            "text": step.text,
        }
    elif isinstance(step, Clarifying):
        body = {"step": "clarify", "text": step.text}
    elif isinstance(step, AwaitingReasons):
        body = {
            "step": "reasons",
            "invitation_id": step.invitation_id,
            "level": step.level,
            "selected": list(step.selected),
            "reminded": step.reminded,
        }
    elif isinstance(step, AwaitingStaff):
        body = {"step": "staff", "invitation_id": step.invitation_id}
    else:
        body = {"step": "survey_reason", "ticket_id": step.ticket_id}
    return {"v": STATE_VERSION, **body, "since": since}


def load(state: object) -> Step:
    """Read a stored state; anything unexpected is idle."""
    try:
        return _load(state)
    except (KeyError, TypeError, ValueError, OverflowError):
        return IDLE


def _load(state: object) -> Step:
    if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
        return IDLE
    name = state.get("step")
    if name == "idle" or not isinstance(name, str):
        return IDLE
    since = _time(state["since"])
    if name == "choose_invitation":
        candidates = state["candidates"]
        if not isinstance(candidates, list) or not 1 <= len(candidates) <= MAX_CANDIDATES:
            raise ValueError("candidates")
        return Choosing(_level(state["level"]), tuple(_id(c) for c in candidates), _text(state["text"]), since)
    if name == "clarify":
        return Clarifying(_text(state["text"]), since)
    if name == "reasons":
        selected = state["selected"]
        if not isinstance(selected, list) or len(selected) > MAX_SELECTED:
            raise ValueError("selected")
        reminded = state["reminded"]
        if not isinstance(reminded, bool):
            raise TypeError("reminded")
        return AwaitingReasons(
            _id(state["invitation_id"]), _level(state["level"]), tuple(_id(c) for c in selected), reminded, since
        )
    if name == "staff":
        return AwaitingStaff(_id(state["invitation_id"]), since)
    if name == "survey_reason":
        return AwaitingSurveyReason(_id(state["ticket_id"]), since)
    return IDLE


def _id(value: object) -> int:
    if type(value) is not int or value <= 0:  # bool is an int; an id is not
        raise ValueError("id")
    return value


def _level(value: object) -> int:
    if type(value) is not int or not 1 <= value <= 5:
        raise ValueError("level")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("text")
    return clean(value)  # the store is outside this package: read its text as untrusted


def _time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise TypeError("since")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("since must be aware")
    return parsed


__all__ = [
    "IDLE",
    "MAX_CANDIDATES",
    "STATE_VERSION",
    "AwaitingReasons",
    "AwaitingStaff",
    "AwaitingSurveyReason",
    "Choosing",
    "Clarifying",
    "Idle",
    "Step",
    "dump",
    "load",
]
