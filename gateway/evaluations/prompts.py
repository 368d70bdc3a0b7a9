"""The rating prompt: a neutral service notice (never asks for a good rating), within two SMS segments."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.sms.segments import fit

LEVEL_BUTTONS = ((5, "非常满意"), (4, "满意"), (3, "基本满意"), (2, "不满意"), (1, "非常不满意"))


def sms_prompt(*, signature: str, item_name: str, completed_at: datetime, tz: str, link: str) -> str:
    """The SMS prompt; a long item name is shortened, never the link."""
    day = completed_at.astimezone(ZoneInfo(tz))

    def render(item: str) -> str:
        return (
            f"{signature}您{day.month}月{day.day}日办理的「{item}」已办结。"
            f"请评价：{link} 或回复5非常满意4满意3基本满意2不满意1非常不满意，回T退订"
        )

    return fit(render, item_name, max_segments=2)


def bot_prompt(
    *, invitation_id: int, item_name: str, office_name: str, completed_at: datetime, tz: str
) -> tuple[str, list[list[dict[str, str]]]]:
    """The bot prompt: a short summary and the five levels as one-tap buttons."""
    day = completed_at.astimezone(ZoneInfo(tz))
    text = f"您{day.month}月{day.day}日在{office_name}办理的「{item_name}」已办结。请对本次服务作出评价："
    buttons = [[{"text": f"{level} {words}", "data": f"rt:{invitation_id}:{level}"}] for level, words in LEVEL_BUTTONS]
    return text, buttons
