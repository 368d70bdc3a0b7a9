"""Chinese working-day calendar for ticket deadlines (regulation Art. 11 and 15).

Working days follow the official State Council schedule, including make-up
working weekends (调休).  The schedule comes from an operator file when it
covers the year, otherwise from the ``chinese_calendar`` package.  Years that
neither source knows fall back to Monday-Friday less the statutory holidays whose
dates are fixed in advance by 全国年节及纪念日放假办法 (lunar dates and the 清明
solar term computed by ``lunar_python``); the make-up working days and the days
given in lieu of a holiday on a weekend are not known, so every result that
touched such a year is flagged ``provisional``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar
from lunar_python import Lunar  # type: ignore[import-untyped]  # no stubs published

__all__ = [
    "CalendarFileError",
    "YearSchedule",
    "ScheduleFile",
    "DueDay",
    "Due",
    "WorkingCalendar",
    "calendar_due_command",
    "statutory_holidays",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"

_ONE_DAY = timedelta(days=1)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR_RE = re.compile(r"\d{4}")
_RANGE_SEPARATOR = ".."
_LIST_KEYS = ("holidays", "workdays")


class CalendarFileError(ValueError):
    """The operator schedule file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class YearSchedule:
    """Official schedule of one year: listed days off and make-up working days."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]

    def is_working_day(self, d: date) -> bool:
        """Return whether ``d`` (a day of this year) is a working day."""
        if d in self.workdays:
            return True
        return d.weekday() < 5 and d not in self.holidays


class ScheduleFile:
    """Operator TOML file adding or overriding whole years of the official schedule."""

    def __init__(self, path: Path, years: Mapping[int, YearSchedule]) -> None:
        self.path = path
        self.years: Mapping[int, YearSchedule] = dict(years)

    @classmethod
    def load(cls, path: Path | str) -> ScheduleFile:
        """Read and strictly validate a schedule file; raise CalendarFileError if invalid."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CalendarFileError(f"{path}: cannot read calendar file: {exc.strerror or exc}") from exc
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CalendarFileError(f"{path}: calendar file is not valid UTF-8") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CalendarFileError(f"{path}: invalid TOML: {exc}") from exc
        return cls.from_mapping(data, path)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: Path | str = "<schedule>") -> ScheduleFile:
        """Validate already-parsed TOML data; ``path`` is only used in error messages."""
        path = Path(path)
        years: dict[int, YearSchedule] = {}
        for key, table in data.items():
            if not _YEAR_RE.fullmatch(key):
                raise CalendarFileError(f"{path}: top-level key {key!r} is not a year; expected a table such as [2027]")
            year = int(key)
            if not 1 <= year <= 9998:
                raise CalendarFileError(f"{path}: year {key}: year out of range")
            if not isinstance(table, dict):
                raise CalendarFileError(f"{path}: year {year}: expected a table [{year}], got {table!r}")
            unknown = sorted(set(table) - set(_LIST_KEYS))
            if unknown:
                raise CalendarFileError(
                    f"{path}: year {year}: unknown key {unknown[0]!r}; allowed keys are 'holidays' and 'workdays'"
                )
            holidays = _parse_day_list(path, year, "holidays", table.get("holidays", []))
            workdays = _parse_day_list(path, year, "workdays", table.get("workdays", []))
            both = sorted(holidays & workdays)
            if both:
                raise CalendarFileError(
                    f"{path}: year {year}: {both[0].isoformat()!r} is listed both as a holiday and as a workday"
                )
            years[year] = YearSchedule(year, frozenset(holidays), frozenset(workdays))
        return cls(path, years)

    def covers(self, year: int) -> bool:
        """Return whether the file defines the schedule of ``year``."""
        return year in self.years


def _parse_day_list(path: Path, year: int, key: str, value: Any) -> set[date]:
    """Expand one ``holidays``/``workdays`` list into the set of days it names."""
    if not isinstance(value, list):
        raise CalendarFileError(f"{path}: year {year}: {key} must be a list of dates, got {value!r}")
    days: set[date] = set()
    for item in value:
        first, last = _parse_entry(path, year, key, item)
        for d in (first, last):
            if d.year != year:
                raise CalendarFileError(
                    f"{path}: year {year}: {key} entry {_show(item)} contains {d.isoformat()}, "
                    f"which belongs to year {d.year}"
                )
        if last < first:
            raise CalendarFileError(f"{path}: year {year}: {key} range {_show(item)} ends before it starts")
        d = first
        while d <= last:
            days.add(d)
            d += _ONE_DAY
    return days


def _parse_entry(path: Path, year: int, key: str, item: Any) -> tuple[date, date]:
    """Parse one list entry: a date, a date string, or an inclusive ``A..B`` range."""
    # A TOML local date (unquoted 2027-01-01) is accepted as well; datetimes are not.
    if isinstance(item, date) and not isinstance(item, datetime):
        return item, item
    if not isinstance(item, str):
        raise CalendarFileError(f"{path}: year {year}: {key} entry {item!r} is not a date")
    text = item.strip()
    if _RANGE_SEPARATOR in text:
        start_text, _, end_text = text.partition(_RANGE_SEPARATOR)
        return (
            _parse_date_text(path, year, key, item, start_text.strip()),
            _parse_date_text(path, year, key, item, end_text.strip()),
        )
    d = _parse_date_text(path, year, key, item, text)
    return d, d


def _parse_date_text(path: Path, year: int, key: str, item: str, text: str) -> date:
    """Parse a strict ``YYYY-MM-DD`` string."""
    if _DATE_RE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise CalendarFileError(
        f"{path}: year {year}: {key} entry {item!r} has invalid date {text!r}; expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
    )


def _show(item: Any) -> str:
    return repr(item.isoformat() if isinstance(item, date) else item)


@cache
def _library_knows(year: int) -> bool:
    """Return whether the installed chinese_calendar has schedule data for ``year``."""
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


@lru_cache(maxsize=64)
def statutory_holidays(year: int) -> frozenset[date]:
    """Days off fixed in advance by 全国年节及纪念日放假办法 (as amended in 2024, in force from 2025).

    元旦 1 day, 春节 4 days (除夕 to 正月初三), 清明 (the solar term's day), 劳动节 5/1-5/2,
    端午 (五月初五), 中秋 (八月十五), 国庆 10/1-10/3.  The State Council's yearly schedule adds
    the days given in lieu of a holiday on a weekend and moves weekends (调休); neither is
    known in advance, so they are not here.
    """
    spring = _lunar_to_solar(year, 1, 1)
    days = {date(year, 1, 1), date(year, 5, 1), date(year, 5, 2)}
    # 除夕 is the last day of the lunar year, whether 腊月 has 29 or 30 days.
    days.update(spring + timedelta(days=offset) for offset in range(-1, 3))
    qingming = Lunar.fromYmd(year, 3, 1).getJieQiTable()["清明"]
    days.add(date(qingming.getYear(), qingming.getMonth(), qingming.getDay()))
    days.add(_lunar_to_solar(year, 5, 5))
    days.add(_lunar_to_solar(year, 8, 15))
    days.update(date(year, 10, day) for day in (1, 2, 3))
    return frozenset(days)


def _lunar_to_solar(year: int, month: int, day: int) -> date:
    """The Gregorian date of a (non-leap) lunar month and day of lunar year ``year``."""
    solar = Lunar.fromYmd(year, month, day).getSolar()
    return date(solar.getYear(), solar.getMonth(), solar.getDay())


@lru_cache(maxsize=8192)
def _library_day(d: date) -> tuple[bool, bool]:
    """Return ``(is_working, official)`` for ``d`` using only chinese_calendar."""
    if _library_knows(d.year):
        return chinese_calendar.is_workday(d), True
    # No published schedule: Monday-Friday less the statutory holidays known in advance,
    # flagged provisional because make-up working days and days in lieu are not known.
    return d.weekday() < 5 and d not in statutory_holidays(d.year), False


@dataclass(frozen=True)
class DueDay:
    """Last working day of a deadline; provisional if an unscheduled year was used."""

    day: date
    provisional: bool


@dataclass(frozen=True)
class Due:
    """Deadline instant (aware UTC, 24:00 local of ``day``) and its last working day."""

    at: datetime
    day: date
    provisional: bool


class WorkingCalendar:
    """Working-day arithmetic per regulation Art. 11 and 15."""

    def __init__(self, schedule_path: Path | None = None, timezone: str = DEFAULT_TIMEZONE) -> None:
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {timezone!r}") from exc
        self.timezone_name = timezone
        self.schedule: ScheduleFile | None = ScheduleFile.load(schedule_path) if schedule_path is not None else None
        self._days: dict[date, tuple[bool, bool]] = {}

    @property
    def tz(self) -> ZoneInfo:
        """Timezone in which receipt instants are turned into calendar days."""
        return self._tz

    def _day(self, d: date) -> tuple[bool, bool]:
        cached = self._days.get(d)
        if cached is not None:
            return cached
        year_schedule = self.schedule.years.get(d.year) if self.schedule is not None else None
        if year_schedule is not None:
            result = (year_schedule.is_working_day(d), True)
        else:
            result = _library_day(d)
        self._days[d] = result
        return result

    def is_working_day(self, d: date) -> bool:
        """Return whether ``d`` is a working day (fallback Mon-Fri for unscheduled years)."""
        return self._day(_as_date(d))[0]

    def has_official_schedule(self, year: int) -> bool:
        """Return whether ``year`` has an official schedule (operator file, else chinese_calendar)."""
        if self.schedule is not None and self.schedule.covers(year):
            return True
        return _library_knows(year)

    def years_without_schedule(self, first: date, last: date) -> list[int]:
        """Return the years between ``first`` and ``last`` (inclusive) lacking an official schedule."""
        return [y for y in range(first.year, last.year + 1) if not self.has_official_schedule(y)]

    def add_working_days(self, start: date, n: int) -> DueDay:
        """Return the ``n``-th working day after ``start`` (``start`` itself is not counted)."""
        start = _as_date(start)
        n = _check_count(n)
        d = start
        counted = 0
        provisional = False
        # Art. 15: the day of receipt is not counted; counting begins the next day.
        while counted < n:
            try:
                d += _ONE_DAY
            except OverflowError:
                raise ValueError(
                    f"{n} working days after {start.isoformat()} is beyond the supported date range"
                ) from None
            working, official = self._day(d)
            if not official:
                provisional = True
            if working:
                counted += 1
        return DueDay(d, provisional)

    def local_date(self, instant: datetime) -> date:
        """Return the calendar day of an aware instant in the calendar's timezone."""
        _check_aware(instant)
        return instant.astimezone(self._tz).date()

    def end_of_day(self, d: date) -> datetime:
        """Return 24:00 local time of ``d`` as an aware UTC datetime."""
        next_day = _as_date(d) + _ONE_DAY
        return datetime.combine(next_day, time(0), tzinfo=self._tz).astimezone(timezone.utc)

    def describe_due(self, due_at: datetime) -> str:
        """A due instant as people say it: '2026-02-27 24:00' in the calendar's timezone."""
        _check_aware(due_at)
        last_day = (due_at - timedelta(microseconds=1)).astimezone(self.tz)
        if due_at.astimezone(self.tz).time() == time(0, 0):
            return f"{last_day:%Y-%m-%d} 24:00"
        return f"{due_at.astimezone(self.tz):%Y-%m-%d %H:%M}"

    def due_at(self, received_at: datetime, working_days: int) -> Due:
        """Return the deadline for something received at ``received_at``."""
        received_day = self.local_date(received_at)
        due_day = self.add_working_days(received_day, working_days)
        # Art. 15: a deadline runs until the end (24:00) of its last working day.
        return Due(at=self.end_of_day(due_day.day), day=due_day.day, provisional=due_day.provisional)

    def working_days_elapsed(self, received_at: datetime, at: datetime) -> int:
        """Return how many working days after the receipt day have begun by ``at``."""
        received_day = self.local_date(received_at)
        current_day = self.local_date(at)
        count = 0
        d = received_day + _ONE_DAY
        while d <= current_day:
            if self._day(d)[0]:
                count += 1
            d += _ONE_DAY
        return count

    def within(self, received_at: datetime, at: datetime, working_days: int) -> bool:
        """Return whether ``at`` falls before the end of the ``working_days`` window."""
        _check_aware(at)
        return at < self.due_at(received_at, working_days).at


def _as_date(d: date) -> date:
    # datetime is a subclass of date; accepting it here would silently drop the
    # time and timezone, so instants must go through due_at/local_date instead.
    if isinstance(d, datetime):
        raise TypeError("expected a date, got a datetime; use due_at() for instants")
    if not isinstance(d, date):
        raise TypeError(f"expected a date, got {type(d).__name__}")
    return d


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"working days must be an integer, got {n!r}")
    if n < 1:
        raise ValueError(f"working days must be at least 1, got {n}")
    return n


def _check_aware(instant: datetime) -> None:
    if not isinstance(instant, datetime):
        raise TypeError(f"expected a datetime, got {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"datetime {instant.isoformat()} is naive; a timezone-aware datetime is required")


def calendar_due_command(day: str, working_days: int, schedule_path: Path | None) -> str:
    """Return the output of ``gateway calendar due DAY --working-days N``."""
    text = day.strip()
    start: date | None = None
    if _DATE_RE.fullmatch(text):
        try:
            start = date.fromisoformat(text)
        except ValueError:
            start = None
    if start is None:
        raise ValueError(f"invalid date {day!r}: expected YYYY-MM-DD")
    _check_count(working_days)
    calendar = WorkingCalendar(schedule_path)
    due = calendar.add_working_days(start, working_days)
    line = f"{due.day.isoformat()} (due {due.day.isoformat()} 24:00 {calendar.timezone_name})"
    if due.provisional:
        missing = calendar.years_without_schedule(start + _ONE_DAY, due.day)
        line += f" provisional: no official schedule for {', '.join(str(y) for y in missing)}"
    return line
