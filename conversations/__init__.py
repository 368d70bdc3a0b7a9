"""Channel-agnostic dialogue flows of the evaluation gateway: pure state machines, no I/O.

A runner (the SMS webhook, the Telegram bot) loads a `Context`, calls `advance()`, carries out the
returned effects with the replies in one transaction, and saves the returned state. This package
imports nothing from aiohttp, aiogram, twilio, redis, sqlalchemy or gateway.
"""

from conversations.flows import QUESTION_TTL_SECONDS, STATE_TTL_SECONDS, advance, rating_prompt, survey_prompt
from conversations.model import (
    AttachReasons,
    AttachSurveyReason,
    CancelTimer,
    Choice,
    Context,
    Effect,
    Inbound,
    InvitationRef,
    OptIn,
    OptOut,
    RatedInvitation,
    ReasonOption,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    Reply,
    ScheduleTimer,
    SurveyRef,
    Transition,
)
from conversations.render import button_label, plain_text
from conversations.state import MemoryStateStore, StateStore, decode_state, encode_state, sender_key, state_key

__all__ = [
    "QUESTION_TTL_SECONDS",
    "STATE_TTL_SECONDS",
    "AttachReasons",
    "AttachSurveyReason",
    "CancelTimer",
    "Choice",
    "Context",
    "Effect",
    "Inbound",
    "InvitationRef",
    "MemoryStateStore",
    "OptIn",
    "OptOut",
    "RatedInvitation",
    "ReasonOption",
    "RecordRating",
    "RecordStaffRating",
    "RecordSurveyAnswer",
    "Reply",
    "ScheduleTimer",
    "StateStore",
    "SurveyRef",
    "Transition",
    "advance",
    "button_label",
    "decode_state",
    "encode_state",
    "plain_text",
    "rating_prompt",
    "sender_key",
    "state_key",
    "survey_prompt",
]
