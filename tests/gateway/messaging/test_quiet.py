"""Quiet hours (DESIGN §2): prompts, surveys and notices wait for morning; answers never do."""

from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.messaging.quiet import HELD_PURPOSES, QuietHours

NIGHT = QuietHours((time(21, 0), time(8, 0)))


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    """A time given in Asia/Shanghai, returned in UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(timezone.utc)


@pytest.mark.parametrize(
    ("local", "quiet"),
    [((4, 20, 59), False), ((4, 21, 0), True), ((4, 23, 30), True), ((5, 0, 0), True), ((5, 7, 59), True),
     ((5, 8, 0), False), ((5, 12, 0), False)],
)
def test_the_window_spans_midnight(local, quiet):  # type: ignore[no-untyped-def]
    assert NIGHT.is_quiet(utc(*local)) is quiet


def test_a_daytime_window() -> None:
    lunch = QuietHours((time(12, 0), time(14, 0)))
    assert not lunch.is_quiet(utc(4, 11, 59)) and lunch.is_quiet(utc(4, 12, 0)) and not lunch.is_quiet(utc(4, 14, 0))
    assert lunch.next_open(utc(4, 13, 0)) == utc(4, 14, 0)


def test_next_open_is_the_coming_morning() -> None:
    assert NIGHT.next_open(utc(4, 22, 15)) == utc(5, 8, 0)  # before midnight: tomorrow
    assert NIGHT.next_open(utc(5, 6, 0)) == utc(5, 8, 0)  # after midnight: today
    assert NIGHT.next_open(utc(5, 9, 0)) is None  # not quiet


@pytest.mark.parametrize("purpose", ["prompt", "survey", "notice"])
def test_bulk_and_notices_are_held(purpose: str) -> None:
    assert purpose in HELD_PURPOSES
    assert NIGHT.hold_until(purpose, utc(4, 23, 0)) == utc(5, 8, 0)
    assert NIGHT.hold_until(purpose, utc(4, 10, 0)) is None


def test_answers_are_never_held() -> None:
    assert NIGHT.hold_until("reply", utc(4, 23, 0)) is None


def test_no_window_is_never_quiet() -> None:
    always = QuietHours(None)
    assert not always.is_quiet(utc(4, 23, 0)) and always.next_open(utc(4, 23, 0)) is None


def test_a_window_ending_on_the_half_hour_opens_on_the_half_hour() -> None:
    late = QuietHours((time(22, 0), time(7, 30)))
    assert late.is_quiet(utc(5, 7, 29)) and not late.is_quiet(utc(5, 7, 30))
    assert late.next_open(utc(4, 23, 0)) == utc(5, 7, 30)


def test_next_open_is_on_the_minute_whatever_the_seconds() -> None:
    from datetime import timedelta

    at = utc(4, 23, 0) + timedelta(seconds=31, microseconds=7)
    assert NIGHT.next_open(at) == utc(5, 8, 0)
    assert NIGHT.next_open(utc(5, 1, 0) + timedelta(seconds=31, microseconds=7)) == utc(5, 8, 0)


def test_a_window_that_starts_where_it_ends_is_empty() -> None:
    same = QuietHours((time(8, 0), time(8, 0)))
    assert not same.is_quiet(utc(4, 8, 0)) and not same.is_quiet(utc(4, 23, 0))
