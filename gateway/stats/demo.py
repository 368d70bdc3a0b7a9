"""The indicators as lines of text (the demo and the command line print them)."""

from __future__ import annotations

from typing import Any

_RATES = (
    ("participation_rate", "参评率"),
    ("good_rate", "好评率"),
    ("bad_rate", "差评率"),
    ("satisfied_rate", "满意率"),
    ("rectification_rate", "差评整改率"),
    ("on_time_rate", "按期整改率"),
    ("callback_rate", "回访率"),
    ("callback_satisfaction_rate", "回访满意率"),
)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def indicator_lines(answer: dict[str, Any]) -> list[str]:
    """A few readable lines from a GET /api/v1/stats answer."""
    t = answer["total"]
    period = answer["period"]
    counts = t["counts"]
    lines = [
        f"period {period['from']} … {period['to']}, scope {answer['scope']}",
        f"valid evaluations N = {t['valid']} (5: {counts['5']}, 4: {counts['4']}, 3: {counts['3']}, 2: {counts['2']}, "
        f"1: {counts['1']}); not counted: {sum(t['not_counted'].values())}; invited: {t['invited']}",
        "  ".join(f"{words} {_pct(t[key])}" for key, words in _RATES[:4]),
        f"满意度 {t['satisfaction_mean'] if t['satisfaction_mean'] is not None else '—'} "
        f"(×20 = {t['satisfaction_score'] if t['satisfaction_score'] is not None else '—'})",
        "  ".join(f"{words} {_pct(t[key])}" for key, words in _RATES[4:]),
        f"bad-review tickets due {t['tickets_due']}, closed {t['tickets_closed']}, resolved {t['tickets_resolved']}; "
        f"mean working days to rectify "
        f"{t['mean_working_days_to_rectify'] if t['mean_working_days_to_rectify'] is not None else '—'}",
    ]
    return lines
