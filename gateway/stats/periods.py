"""Periods in local days (Asia/Shanghai): the day, ISO week, month, quarter or year holding a day."""

from __future__ import annotations

from datetime import date, timedelta


def period_bounds(kind: str, day: date) -> tuple[date, date]:
    """First and last day of the period of `kind` holding `day`."""
    if kind == "day":
        return day, day
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=6)
    if kind == "month":
        return day.replace(day=1), next_month(day.replace(day=1)) - timedelta(days=1)
    if kind == "quarter":
        first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        return first, next_month(next_month(next_month(first))) - timedelta(days=1)
    if kind == "year":
        return date(day.year, 1, 1), date(day.year, 12, 31)
    raise ValueError(f"unknown period {kind!r}")


def period_key(kind: str, day: date) -> str:
    """The label of the period of `kind` holding `day`: 2026-03-04, 2026-W10, 2026-03, 2026-Q1, 2026."""
    if kind == "day":
        return day.isoformat()
    if kind == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if kind == "month":
        return f"{day.year}-{day.month:02d}"
    if kind == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if kind == "year":
        return str(day.year)
    raise ValueError(f"unknown period {kind!r}")


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def previous_month(first: date) -> date:
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def month_start(text: str) -> date:
    year, month = text.split("-")
    return date(int(year), int(month), 1)
