from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest

from gateway.tickets.calendar import (
    CalendarFileError,
    Due,
    DueDay,
    ScheduleFile,
    WorkingCalendar,
    calendar_due_command,
    statutory_holidays,
)

UTC = timezone.utc

SCHEDULE_2027 = """
[2027]
holidays = ["2027-01-01", "2027-02-05..2027-02-11"]
workdays = ["2027-02-14"]
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    return WorkingCalendar()


def write_schedule(tmp_path: Path, text: str, name: str = "schedule.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- official 2026 schedule --------------------------------------------------


def test_spring_festival_2026(cal: WorkingCalendar) -> None:
    # Sat 02-14 is a make-up working day, 02-15..02-23 are off.
    assert cal.add_working_days(date(2026, 2, 13), 5) == DueDay(date(2026, 2, 27), provisional=False)


def test_spring_festival_2026_make_up_saturdays(cal: WorkingCalendar) -> None:
    assert cal.is_working_day(date(2026, 2, 14))
    assert cal.is_working_day(date(2026, 2, 28))
    assert not cal.is_working_day(date(2026, 2, 16))  # Monday inside the holiday
    assert not cal.is_working_day(date(2026, 2, 21))  # ordinary Saturday inside the holiday


def test_national_day_2026_make_up_days(cal: WorkingCalendar) -> None:
    assert cal.is_working_day(date(2026, 9, 20))  # Sunday
    assert cal.is_working_day(date(2026, 10, 10))  # Saturday
    for day in range(1, 8):
        assert not cal.is_working_day(date(2026, 10, day))
    assert not cal.is_working_day(date(2026, 9, 25))  # Mid-Autumn Festival, a Friday


def test_national_day_2026_crossing(cal: WorkingCalendar) -> None:
    # Oct 8 (Thu), Oct 9 (Fri), Oct 10 (make-up Sat).
    assert cal.add_working_days(date(2026, 9, 30), 3) == DueDay(date(2026, 10, 10), provisional=False)
    assert cal.add_working_days(date(2026, 9, 30), 4).day == date(2026, 10, 12)


def test_weekend_make_up_day_counts(cal: WorkingCalendar) -> None:
    assert cal.add_working_days(date(2026, 9, 18), 1).day == date(2026, 9, 20)
    assert cal.add_working_days(date(2026, 9, 19), 1).day == date(2026, 9, 20)


def test_ordinary_weekend_is_skipped(cal: WorkingCalendar) -> None:
    assert not cal.is_working_day(date(2026, 3, 7))
    assert cal.add_working_days(date(2026, 3, 6), 1).day == date(2026, 3, 9)


def test_n_must_be_positive(cal: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cal.add_working_days(date(2026, 3, 2), 0)
    with pytest.raises(ValueError, match="at least 1"):
        cal.due_at(utc(2026, 3, 2, 1), -1)


def test_datetime_is_not_accepted_as_a_day(cal: WorkingCalendar) -> None:
    with pytest.raises(TypeError):
        cal.is_working_day(utc(2026, 3, 2))


# --- due_at: receipt day and local dates ------------------------------------


def test_receipt_day_is_not_counted_friday_evening(cal: WorkingCalendar) -> None:
    received = utc(2026, 3, 6, 12, 0)  # Friday 20:00 Shanghai
    due = cal.due_at(received, 1)
    assert due == Due(at=utc(2026, 3, 9, 16, 0), day=date(2026, 3, 9), provisional=False)


def test_local_date_decides_receipt_day(cal: WorkingCalendar) -> None:
    before_midnight = utc(2026, 3, 5, 15, 59)  # Thu 23:59 Shanghai
    after_midnight = utc(2026, 3, 5, 16, 1)  # Fri 00:01 Shanghai, still Thursday in UTC
    assert cal.due_at(before_midnight, 1).day == date(2026, 3, 6)
    assert cal.due_at(after_midnight, 1).day == date(2026, 3, 9)


def test_due_instant_is_end_of_local_day(cal: WorkingCalendar) -> None:
    due = cal.due_at(utc(2026, 2, 13, 2, 0), 5)
    assert due.day == date(2026, 2, 27)
    assert due.at == utc(2026, 2, 27, 16, 0)
    assert due.at.utcoffset() == timedelta(0)


def test_due_at_accepts_other_offsets(cal: WorkingCalendar) -> None:
    received = datetime(2026, 3, 5, 11, 0, tzinfo=timezone(timedelta(hours=-5)))  # Fri 00:00 Shanghai
    assert cal.due_at(received, 1).day == date(2026, 3, 9)


def test_naive_datetimes_rejected(cal: WorkingCalendar) -> None:
    naive = datetime(2026, 3, 2, 9, 0)
    with pytest.raises(ValueError, match="naive"):
        cal.due_at(naive, 1)
    with pytest.raises(ValueError, match="naive"):
        cal.within(naive, utc(2026, 3, 2, 9), 1)
    with pytest.raises(ValueError, match="naive"):
        cal.within(utc(2026, 3, 2, 9), naive, 1)
    with pytest.raises(ValueError, match="naive"):
        cal.working_days_elapsed(utc(2026, 3, 2, 9), naive)


# --- within / working_days_elapsed ------------------------------------------


def test_within_at_the_exact_edge(cal: WorkingCalendar) -> None:
    received = utc(2026, 2, 13, 2, 0)
    edge = cal.due_at(received, 5).at
    assert edge == utc(2026, 2, 27, 16, 0)
    assert cal.within(received, edge - timedelta(microseconds=1), 5)
    assert not cal.within(received, edge, 5)
    assert cal.within(received, received, 5)


def test_working_days_elapsed(cal: WorkingCalendar) -> None:
    received = utc(2026, 2, 13, 2, 0)  # Fri 10:00 Shanghai
    assert cal.working_days_elapsed(received, utc(2026, 2, 13, 15, 59)) == 0
    assert cal.working_days_elapsed(received, utc(2026, 2, 13, 16, 0)) == 1  # make-up Saturday begins
    assert cal.working_days_elapsed(received, utc(2026, 2, 22, 12, 0)) == 1
    assert cal.working_days_elapsed(received, utc(2026, 2, 23, 16, 0)) == 2
    assert cal.working_days_elapsed(received, utc(2026, 2, 26, 16, 0)) == 5
    assert cal.working_days_elapsed(received, utc(2026, 2, 1)) == 0


# --- years without an official schedule -------------------------------------


def test_2027_without_file_is_provisional(cal: WorkingCalendar) -> None:
    assert cal.has_official_schedule(2026)
    assert not cal.has_official_schedule(2027)
    # New Year's Day 2027 (a Friday) is a statutory holiday even before the schedule is out.
    assert not cal.is_working_day(date(2027, 1, 1))
    assert not cal.is_working_day(date(2027, 1, 2))
    assert cal.is_working_day(date(2027, 1, 4))
    assert cal.add_working_days(date(2027, 1, 1), 1) == DueDay(date(2027, 1, 4), provisional=True)


def test_deadline_crossing_into_2027_is_provisional(cal: WorkingCalendar) -> None:
    # 12-31 (day 1), 01-01 off, 01-02/03 weekend, 01-04 (day 2), 01-05 (day 3).
    assert cal.add_working_days(date(2026, 12, 30), 3) == DueDay(date(2027, 1, 5), provisional=True)
    assert cal.due_at(utc(2026, 12, 30, 2), 3).provisional
    assert cal.add_working_days(date(2026, 12, 28), 2) == DueDay(date(2026, 12, 30), provisional=False)


# The statutory days of 全国年节及纪念日放假办法 as revised in force from 2025, for 2031.
STATUTORY_2031 = {
    date(2031, 1, 1),  # 元旦
    date(2031, 1, 22), date(2031, 1, 23), date(2031, 1, 24), date(2031, 1, 25),  # 除夕..初三
    date(2031, 4, 5),  # 清明 (solar term)
    date(2031, 5, 1), date(2031, 5, 2),  # 劳动节
    date(2031, 6, 24),  # 端午 (五月初五)
    date(2031, 10, 1), date(2031, 10, 2), date(2031, 10, 3),  # 国庆; 中秋 (八月十五) is 10-01 too
}


def test_statutory_holidays_of_a_year_without_schedule() -> None:
    assert statutory_holidays(2031) == STATUTORY_2031


def test_provisional_year_skips_the_statutory_holidays(cal: WorkingCalendar) -> None:
    assert not cal.has_official_schedule(2031)
    for day in STATUTORY_2031:
        assert not cal.is_working_day(day), day
    # 04-30 Wed: 05-01/02 off, weekend, so the next working day is Monday 05-05.
    assert cal.add_working_days(date(2031, 4, 30), 1) == DueDay(date(2031, 5, 5), provisional=True)
    # 除夕 to 初三 (Wed-Sat): a case received Tuesday 01-21 is due Monday 01-27 for one day.
    assert cal.add_working_days(date(2031, 1, 21), 1) == DueDay(date(2031, 1, 27), provisional=True)
    assert cal.add_working_days(date(2031, 6, 23), 1) == DueDay(date(2031, 6, 25), provisional=True)
    # Make-up working days are unknown: weekends stay off, and the result stays provisional.
    assert not cal.is_working_day(date(2031, 1, 26))
    assert cal.add_working_days(date(2031, 3, 3), 1) == DueDay(date(2031, 3, 4), provisional=True)


@pytest.mark.parametrize("year", [2025, 2026])
def test_provisional_holidays_are_official_holidays_where_the_schedule_is_known(year: int) -> None:
    """The rule never invents a day off: in years with an official schedule each of its days is one."""
    days = statutory_holidays(year)
    assert len(days) == 13  # 中秋 and 国庆 fall apart in both years
    for day in days:
        is_holiday, name = chinese_calendar.get_holiday_detail(day)
        assert is_holiday and name is not None, day


def test_operator_file_for_2027(tmp_path: Path) -> None:
    cal = WorkingCalendar(schedule_path=write_schedule(tmp_path, SCHEDULE_2027))
    assert cal.has_official_schedule(2027)
    assert not cal.is_working_day(date(2027, 1, 1))
    assert cal.is_working_day(date(2027, 2, 14))  # make-up Sunday
    assert cal.add_working_days(date(2026, 12, 30), 3) == DueDay(date(2027, 1, 5), provisional=False)
    assert cal.add_working_days(date(2027, 2, 4), 1) == DueDay(date(2027, 2, 12), provisional=False)
    assert cal.add_working_days(date(2027, 2, 12), 1) == DueDay(date(2027, 2, 14), provisional=False)
    # The library still supplies 2026.
    assert cal.add_working_days(date(2026, 2, 13), 5).day == date(2026, 2, 27)


def test_operator_file_overrides_2026(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, "[2026]\nholidays = []\nworkdays = []\n")
    cal = WorkingCalendar(schedule_path=path)
    assert cal.add_working_days(date(2026, 2, 13), 5) == DueDay(date(2026, 2, 20), provisional=False)
    assert not cal.is_working_day(date(2026, 2, 14))


def test_operator_file_accepts_toml_dates(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, "[2027]\nholidays = [2027-01-01]\n")
    assert not WorkingCalendar(path).is_working_day(date(2027, 1, 1))


def test_schedule_file_years(tmp_path: Path) -> None:
    schedule = ScheduleFile.load(write_schedule(tmp_path, SCHEDULE_2027))
    year = schedule.years[2027]
    assert len(year.holidays) == 8
    assert year.workdays == frozenset({date(2027, 2, 14)})
    assert schedule.covers(2027) and not schedule.covers(2026)


# --- schedule file validation ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[2027]\nholidays = ["2027-02-30"]\n', ["2027", "'2027-02-30'"]),
        ('[2027]\nholidays = ["2027/01/01"]\n', ["2027", "'2027/01/01'"]),
        ('[2027]\nworkdays = ["soon"]\n', ["2027", "'soon'"]),
        ('[2027]\nholidays = ["2027-01-01.."]\n', ["2027", "'2027-01-01..'"]),
        ('[2027]\nholidays = ["2028-01-01"]\n', ["2027", "2028-01-01", "year 2028"]),
        ('[2027]\nholidays = ["2027-12-31..2028-01-03"]\n', ["2027", "2028-01-03"]),
        (
            '[2027]\nholidays = ["2027-02-05..2027-02-11"]\nworkdays = ["2027-02-07"]\n',
            ["2027", "'2027-02-07'", "both"],
        ),
        ('[2027]\nholidays = ["2027-02-11..2027-02-05"]\n', ["2027", "'2027-02-11..2027-02-05'", "ends before"]),
        ('[2027]\nholidays = "2027-01-01"\n', ["2027", "list"]),
        ('[2027]\nholidays = [20270101]\n', ["2027", "20270101"]),
        ('[2027]\nholiday = ["2027-01-01"]\n', ["2027", "'holiday'"]),
        ('[next]\nholidays = []\n', ["'next'"]),
        ('2027 = ["2027-01-01"]\n', ["2027", "table"]),
        ('[2027]\nholidays = [\n', ["invalid TOML"]),
    ],
)
def test_invalid_schedule_file(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write_schedule(tmp_path, text, name="bad-calendar.toml")
    with pytest.raises(CalendarFileError) as excinfo:
        WorkingCalendar(schedule_path=path)
    message = str(excinfo.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_schedule_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(CalendarFileError, match="absent.toml"):
        WorkingCalendar(schedule_path=path)


def test_calendar_file_error_is_a_value_error() -> None:
    assert issubclass(CalendarFileError, ValueError)


# --- CLI text ----------------------------------------------------------------


def test_calendar_due_command() -> None:
    assert calendar_due_command("2026-02-13", 5, None) == "2026-02-27 (due 2026-02-27 24:00 Asia/Shanghai)"


def test_calendar_due_command_provisional() -> None:
    assert calendar_due_command("2026-12-30", 3, None) == (
        "2027-01-05 (due 2027-01-05 24:00 Asia/Shanghai) provisional: no official schedule for 2027"
    )


def test_calendar_due_command_with_file(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, SCHEDULE_2027)
    assert calendar_due_command("2026-12-30", 3, path) == "2027-01-05 (due 2027-01-05 24:00 Asia/Shanghai)"


@pytest.mark.parametrize("text", ["2026-02-30", "13/02/2026", "", "2026-2-13", "20260213"])
def test_calendar_due_command_bad_date(text: str) -> None:
    with pytest.raises(ValueError, match="invalid date"):
        calendar_due_command(text, 5, None)


def test_calendar_due_command_bad_count() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        calendar_due_command("2026-02-13", 0, None)
