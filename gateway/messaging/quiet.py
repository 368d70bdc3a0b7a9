"""Quiet hours (DESIGN.md §2): no prompts or bulk SMS between 21:00 and 08:00 Asia/Shanghai by default."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from gateway.errors import BrokenInvariant

# Messages that may wait for morning; answers to a citizen who just wrote are never held.
HELD_PURPOSES = frozenset({"prompt", "survey", "notice"})


class QuietHours:
    def __init__(self, window: tuple[time, time] | None, tz: str = "Asia/Shanghai") -> None:
        self.window = window
        self.tz = ZoneInfo(tz)

    def is_quiet(self, at: datetime) -> bool:
        if self.window is None:
            return False
        start, end = self.window
        local = at.astimezone(self.tz).time()
        if start <= end:
            return start <= local < end
        return local >= start or local < end  # the window spans midnight

    def next_open(self, at: datetime) -> datetime | None:
        """When the window next opens (aware UTC), or None when `at` is not quiet."""
        if not self.is_quiet(at):
            return None
        if self.window is None:
            raise BrokenInvariant("self.window is missing")
        end = self.window[1]
        local = at.astimezone(self.tz)
        opening = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
        if opening <= local:
            opening = (local + timedelta(days=1)).replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
        return opening.astimezone(timezone.utc)

    def hold_until(self, purpose: str, at: datetime) -> datetime | None:
        """The earliest send time for a message of this purpose queued at `at`."""
        if purpose not in HELD_PURPOSES:
            return None
        return self.next_open(at)
