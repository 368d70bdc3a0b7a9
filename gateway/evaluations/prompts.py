"""The rating prompt: a neutral service notice (never asks for a good rating), within two SMS segments."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from conversations import InvitationRef, button_label, rating_prompt
from gateway.clock import as_utc
from gateway.messaging.segments import fit, segments

LEVEL_BUTTONS = ((5, "非常满意"), (4, "满意"), (3, "基本满意"), (2, "不满意"), (1, "非常不满意"))


def sms_prompt(
    *, signature: str, item_name: str, completed_at: datetime, tz: str, link: str, bot_link: str | None = None
) -> str:
    """The SMS prompt; a long item name is shortened, never the link.

    `bot_link` (the Telegram deep link) is added only when the prompt still fits two segments with the
    whole item name: the name and the rating link matter more than a second way to answer.
    """
    day = as_utc(completed_at).astimezone(ZoneInfo(tz))

    def render(item: str, bot: str = "") -> str:
        return (
            f"{signature}您{day.month}月{day.day}日办理的「{item}」已办结。"
            f"请评价：{link} 或回复5非常满意4满意3基本满意2不满意1非常不满意，{bot}回T退订"
        )

    if bot_link:
        with_bot = render(item_name, f"或用Telegram：{bot_link}，")
        if segments(with_bot) <= 2:
            return with_bot
    return fit(render, item_name, max_segments=2)


def telegram_deep_link(username: str, token: str) -> str | None:
    """The deep link that opens the bot and links the chat to the invitation's citizen; None without a bot."""
    username = username.strip().lstrip("@")
    if not username:
        return None
    return f"https://t.me/{username}?start={token}"


def bot_prompt(
    *, invitation_id: int, item_name: str, office_name: str, completed_at: datetime, tz: str, window: bool = False
) -> tuple[str, list[list[dict[str, str]]]]:
    """The bot prompt: the conversation's own rating prompt (a short summary, the five levels as buttons
    in the flow's payload grammar), rendered as the conversation runner renders every bot reply."""
    local = as_utc(completed_at).astimezone(ZoneInfo(tz))
    reply = rating_prompt(
        InvitationRef(
            id=invitation_id,
            item_name=item_name,
            office=office_name,
            completed_on=local.date(),
            window=window,
            sent_at=as_utc(completed_at),
        )
    )
    buttons = [[{"text": button_label(choice), "data": choice.data}] for choice in reply.choices]
    return reply.text, buttons
