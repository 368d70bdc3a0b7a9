"""What the evaluator receives when a unit resolves their bad review (Art. 15(二): reply to the evaluator)."""

from __future__ import annotations

from gateway.messaging.segments import fit, segments
from gateway.tickets.errors import ValidationFailed

MAX_SMS_SEGMENTS = 2  # DESIGN.md §2: every SMS stays within two segments


def reply_notice(*, channel: str, signature: str, item_name: str, reply: str) -> str:
    """The reply notice for the citizen's channel; an SMS that cannot fit two segments is refused, never cut."""
    if channel != "sms":
        return f"您对「{item_name}」的评价已办理。办理单位答复：\n{reply}"

    def render(item: str) -> str:
        return f"{signature}您评价的「{item}」已办理，答复：{reply} 回T退订"

    try:
        # Only the item name is ever shortened; the department's words reach the citizen whole.
        return fit(render, item_name, max_segments=MAX_SMS_SEGMENTS)
    except ValueError:
        room = _room_for_reply(signature)
        raise ValidationFailed(
            f"the evaluator is reached by SMS and the reply must fit in {MAX_SMS_SEGMENTS} SMS segments with the "
            f"notice around it: shorten it to at most {room} characters",
            field="reply",
            details={"max_length": room},
        ) from None


def _room_for_reply(signature: str) -> int:
    room = 0
    while segments(f"{signature}您评价的「」已办理，答复：{'办' * (room + 1)} 回T退订") <= MAX_SMS_SEGMENTS:
        room += 1
    return room


def reply_room(signature: str) -> int:
    """The longest reply (in UCS-2 units) that fits the SMS reply notice, with the item name shortened away."""
    return _room_for_reply(signature)
