"""The statistics API's query and answer models (the OpenAPI document is generated from them)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PERIODS = ("day", "week", "month", "quarter", "year")
GROUPS = ("region", "approval", "unit", "item", "staff", "channel", "reason", "reason_kind", *PERIODS)
MAX_RANGE_DAYS = 3 * 366  # a range longer than three years is refused

# The evaluation channels of gateway.store.models.EVALUATION_CHANNELS.
Channel = Literal["web", "qr", "sms", "bot", "evaluator", "department", "phone", "app"]


class StatsQuery(BaseModel):
    """Filters and grouping of GET /api/v1/stats. Every day is a local day (Asia/Shanghai)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    period: Literal["day", "week", "month", "quarter", "year"] | None = Field(
        default=None, description="the day, ISO week, month, quarter or year holding `date` (default: month)"
    )
    date: dt.date | None = Field(default=None, description="a day inside the period (default: today)")
    from_: dt.date | None = Field(default=None, alias="from", description="first day of a date range (with `to`)")
    to: dt.date | None = Field(default=None, description="last day of a date range (with `from`), at most 3 years")
    region: str | None = Field(default=None, pattern=r"^\d{6}$", description="行政区划 code")
    approval: str | None = Field(default=None, max_length=64, description="approval department's organisation code")
    unit: str | None = Field(default=None, max_length=64, description="handling unit's organisation code")
    item: str | None = Field(default=None, max_length=64, description="service item code")
    staff: str | None = Field(default=None, max_length=64, description="window staff member's id")
    channel: Channel | None = None
    reason: int | None = Field(default=None, ge=100, le=999, description="reason code: counts evaluations carrying it")
    reason_kind: Literal["platform", "staff", "handling"] | None = Field(
        default=None, description="reasons about the platform (谁建设、谁负责), the staff member, or the handling"
    )
    group_by: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[a-z_]+(,[a-z_]+)*$",
        description="comma-separated: " + ", ".join(GROUPS),
    )


class Indicators(BaseModel):
    """The indicators of docs/statistics.md; a rate is null when its denominator is 0."""

    counts: dict[str, int] = Field(description="valid evaluations per level, '1' … '5'")
    valid: int = Field(description="N: valid evaluations (a batch or theme rating counts once)")
    not_counted: dict[str, int] = Field(description="evaluations ruled out, by ruling kind (stored, not counted)")
    invited: int | None = Field(
        description="invitations (services to be rated); null when a channel or reason is selected"
    )
    participation_rate: float | None = Field(description="参评率 = (valid + not_counted) / invited")
    good_rate: float | None = Field(description="好评率 = (n3+n4+n5) / N")
    bad_rate: float | None = Field(description="差评率 = (n1+n2) / N")
    satisfied_rate: float | None = Field(description="满意率 = (n4+n5) / N")
    satisfaction_mean: float | None = Field(description="满意度 = mean level")
    satisfaction_score: float | None = Field(description="满意度 on a 100-point scale = mean level × 20")
    staff_rated: int = Field(description="valid evaluations with a staff rating")
    staff_satisfaction_mean: float | None = Field(description="mean staff rating")
    tickets_due: int | None = Field(description="valid bad-review tickets due in the period")
    tickets_closed: int | None = None
    rectification_rate: float | None = Field(description="差评整改率 = closed / due")
    closed_on_time: int | None = None
    on_time_rate: float | None = Field(description="按期整改率 = closed, resolved by the due time / closed")
    tickets_resolved: int | None = None
    called_back: int | None = None
    callback_rate: float | None = Field(description="回访率 = called back / resolved")
    callback_answered: int | None = None
    callback_satisfied: int | None = None
    callback_satisfaction_rate: float | None = Field(description="回访满意率 = satisfied / answered")
    mean_working_days_to_rectify: float | None = Field(description="mean working days from receipt to resolution")


class Period(BaseModel):
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")
    model_config = ConfigDict(populate_by_name=True)


class StatsGroup(BaseModel):
    key: dict[str, str | int]
    label: dict[str, str]
    indicators: Indicators


class StatsAnswer(BaseModel):
    period: Period
    scope: str = Field(description="whose jurisdiction the figures cover")
    group_by: list[str]
    total: Indicators
    groups: list[StatsGroup]


class RankingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    month: str | None = Field(
        default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (default: last month)"
    )
    kind: Literal["unit", "staff"] = "unit"
    min_sample: int | None = Field(default=None, ge=1, le=100000, description="default GATEWAY_RANKING_MIN_SAMPLE (30)")


class RankingEntry(BaseModel):
    rank: int | None = Field(description="null below the minimum sample (样本不足)")
    unit: str
    unit_name: str
    staff: str | None = None
    valid: int
    good: int
    good_rate: float | None
    wilson_lower: float | None = Field(description="Wilson lower bound (95%) of 好评率, the ranking key")
    sample: Literal["ok", "样本不足"]
    bottom_tenth: bool
    consecutive_bottom: bool = Field(description="连续靠后: in the bottom tenth this month and the month before")


class RankingAnswer(BaseModel):
    month: str
    kind: str
    min_sample: int
    scope: str
    entries: list[RankingEntry]


class AnalysisQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: dt.date | None = Field(default=None, alias="from", description="first day (default: 12 weeks ago)")
    to: dt.date | None = Field(default=None, description="last day (default: today)")
    limit: int = Field(default=10, ge=1, le=100)


class ReasonCount(BaseModel):
    code: int
    label: str
    kind: str
    n: int


class ItemCount(BaseModel):
    item_code: str
    item_name: str
    n: int


class WeekPoint(BaseModel):
    week: str
    valid: int
    bad: int
    bad_rate: float | None


class AlertOut(BaseModel):
    unit: str
    unit_name: str
    window_start: dt.date
    window_end: dt.date
    bad: int
    valid: int
    baseline_bad: int
    baseline_valid: int
    p_value: float


class FlagStates(BaseModel):
    """Evaluations rated in the period that fraud flags hold, each once, under its most decisive state."""

    open: int = Field(description="flagged, not yet ruled: they still count")
    confirmed: int = Field(description="a confirmed flag holds them (good reviews among them are not counted)")
    dismissed: int = Field(description="only dismissed flags hold them: they count")


class AnalysisAnswer(BaseModel):
    period: Period
    scope: str
    top_reasons: list[ReasonCount]
    top_items: list[ItemCount]
    weekly: list[WeekPoint]
    alerts: list[AlertOut]
    flags: FlagStates | None = Field(
        description="evaluations held by fraud flags (docs/fraud.md); null for a unit, which does not see flags"
    )


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    format: Literal["csv", "xlsx"] = "csv"
    from_: dt.date | None = Field(default=None, alias="from", description="first day (default: 30 days ago)")
    to: dt.date | None = Field(default=None, description="last day (default: today), at most 3 years after `from`")
