"""The values a conversation works with: what comes in, what it knows, what it answers and asks for.

Everything here is a frozen dataclass without behaviour beyond validation (and `Renderings`, which builds
a reply's shorter renderings when they are asked for). A runner builds the
`Context` from the ticket store before each call of `advance()` and carries out the effects after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Union, overload

InboundKind = Literal["text", "button", "timer"]


def _require_aware(name: str, value: datetime) -> None:
    # Every comparison in the flows is between aware times (STYLE 8); a naive one is a runner bug,
    # so it fails where it is made instead of deep inside a conversation.
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True)
class Inbound:
    """One thing the citizen did (typed text, tapped a button) or a timer that came due."""

    kind: InboundKind
    at: datetime
    text: str = ""
    data: str = ""  # a button's payload, see conversations.buttons

    def __post_init__(self) -> None:
        if self.kind not in ("text", "button", "timer"):
            raise ValueError("kind must be 'text', 'button' or 'timer'")
        _require_aware("at", self.at)
        if not isinstance(self.text, str) or not isinstance(self.data, str):
            raise TypeError("text and data must be str")


@dataclass(frozen=True)
class Choice:
    """A button in the bot, a numbered option in SMS.

    `key` is what a citizen types to pick it ("1", "5", "0"); a choice without a key exists only as a
    button (the 提交 of a multi-select list).
    """

    label: str
    data: str
    selected: bool = False
    key: str = ""


@dataclass(frozen=True)
class Reply:
    """One message to send back. `edit_previous` asks the bot to redraw the message the button was on.

    `shorter`: the same reply with ever shorter service and office names (never shorter instructions),
    for a channel that must fit a length: an SMS takes the first that fits two segments with its signature.
    """

    text: str
    choices: tuple[Choice, ...] = ()
    multi_select: bool = False
    edit_previous: bool = False
    shorter: Sequence[Reply] = field(default=(), compare=False, repr=False)


class Renderings(Sequence[Reply]):
    """A reply's shorter renderings (`Reply.shorter`), each built from its parameters the first time it
    is asked for: a channel that takes the first rendering that fits seldom needs more than one, and a
    channel without a length limit needs none."""

    __slots__ = ("_build", "_built", "_params")

    def __init__(self, build: Callable[..., Reply], params: Sequence[tuple[Any, ...]]) -> None:
        self._build = build
        self._params = tuple(params)
        self._built: list[Reply] = []

    def __len__(self) -> int:
        return len(self._params)

    @overload
    def __getitem__(self, index: int) -> Reply: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Reply, ...]: ...

    def __getitem__(self, index: int | slice) -> Reply | tuple[Reply, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError("rendering index out of range")
        while len(self._built) <= position:
            self._built.append(self._build(*self._params[len(self._built)]))
        return self._built[position]

    def __iter__(self) -> Iterator[Reply]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class InvitationRef:
    """A service of this citizen; `window` cases may also rate the staff member (Art. 7)."""

    id: int
    item_name: str
    office: str
    completed_on: date
    window: bool
    sent_at: datetime  # when the rating invitation went out: the most recent prompt is the one answered

    def __post_init__(self) -> None:
        _require_aware("sent_at", self.sent_at)


@dataclass(frozen=True)
class RatedInvitation:
    """A bad rating (level 1 or 2) that has no reasons or text yet (Art. 8)."""

    invitation: InvitationRef
    level: int
    rated_at: datetime  # the reasons question went out with the rating's confirmation

    def __post_init__(self) -> None:
        _require_aware("rated_at", self.rated_at)


@dataclass(frozen=True)
class ReasonOption:
    """A preset reason of the catalogue (DESIGN §4); `short` is the few characters shown in a list."""

    code: int
    label: str
    short: str


@dataclass(frozen=True)
class SurveyRef:
    """An open callback-survey question (回访, Art. 15(五)) about a ticket of this citizen."""

    ticket_id: int
    item_name: str
    sent_at: datetime

    def __post_init__(self) -> None:
        _require_aware("sent_at", self.sent_at)


@dataclass(frozen=True)
class Context:
    """What the runner loaded for this citizen just before the call. It is the truth; state is a hint.

    - open_invitations: services not rated yet, still within the rating period (Art. 11);
    - reasons_by_level: the catalogue, level -> options in display order;
    - open_surveys: callback questions sent and not answered yet;
    - awaiting_reasons: recent bad ratings (e.g. the last 48 hours) without reasons or text;
    - awaiting_staff_rating: recently rated window services without a staff rating.
    """

    open_invitations: tuple[InvitationRef, ...]
    reasons_by_level: Mapping[int, tuple[ReasonOption, ...]]
    open_surveys: tuple[SurveyRef, ...] = ()
    awaiting_reasons: tuple[RatedInvitation, ...] = ()
    awaiting_staff_rating: tuple[InvitationRef, ...] = ()
    reminder_after_seconds: int = 1800

    def __post_init__(self) -> None:
        if self.reminder_after_seconds <= 0:
            raise ValueError("reminder_after_seconds must be positive")


# Effects: commands for the runner, carried out in one transaction with the outgoing replies.


@dataclass(frozen=True)
class RecordRating:
    invitation_id: int
    level: int


@dataclass(frozen=True)
class AttachReasons:
    """Reason codes (of the rating's level) and/or the citizen's own words for a rating."""

    invitation_id: int
    codes: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class RecordStaffRating:
    invitation_id: int
    level: int


@dataclass(frozen=True)
class OptOut:
    """Stop every invitation to this sender at once and for good."""


@dataclass(frozen=True)
class OptIn:
    pass


@dataclass(frozen=True)
class ScheduleTimer:
    """Deliver an Inbound(kind="timer") for this conversation after the delay (one pending timer per key)."""

    after_seconds: int


@dataclass(frozen=True)
class CancelTimer:
    pass


@dataclass(frozen=True)
class RecordSurveyAnswer:
    ticket_id: int
    satisfied: bool


@dataclass(frozen=True)
class AttachSurveyReason:
    ticket_id: int
    text: str


Effect = Union[
    RecordRating,
    AttachReasons,
    RecordStaffRating,
    OptOut,
    OptIn,
    ScheduleTimer,
    CancelTimer,
    RecordSurveyAnswer,
    AttachSurveyReason,
]


@dataclass(frozen=True)
class Transition:
    """The outcome of one step: the state to keep, the messages to send, the effects to apply.

    `ttl_seconds` is how long to keep `state`; 0 means the conversation is idle and its key can be
    deleted. `answered` is true when a tapped button answered the question its keyboard asked (a
    rating, the ticked reasons submitted, a staff level or the skip, a survey answer): the bot then
    closes that keyboard. A tick, a refused or stale tap and every typed input leave it false.
    """

    state: dict[str, Any]
    replies: tuple[Reply, ...] = ()
    effects: tuple[Effect, ...] = ()
    ttl_seconds: int = 0
    answered: bool = False

    @property
    def step(self) -> str:
        return str(self.state.get("step", "idle"))


__all__ = [
    "AttachReasons",
    "AttachSurveyReason",
    "CancelTimer",
    "Choice",
    "Context",
    "Effect",
    "Inbound",
    "InboundKind",
    "InvitationRef",
    "OptIn",
    "OptOut",
    "RatedInvitation",
    "ReasonOption",
    "RecordRating",
    "RecordStaffRating",
    "RecordSurveyAnswer",
    "Renderings",
    "Reply",
    "ScheduleTimer",
    "SurveyRef",
    "Transition",
]
