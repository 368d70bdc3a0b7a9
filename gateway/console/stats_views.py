"""The statistics page: the indicators, trend charts, rankings and analysis of `gateway.stats` for the
person's jurisdiction, computed by the same query functions as GET /api/v1/stats, /rankings and /analysis.

The period is a month (`month=YYYY-MM`, default the current one) or a range (`from` and `to`); the
rankings are monthly, so a range ranks the month holding its last day.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from gateway.console.web import PageError, person, render
from gateway.evaluations.reasons import LEVEL_WORDS
from gateway.stats import charts
from gateway.stats.errors import InvalidStatsQuery
from gateway.stats.periods import month_start, next_month, period_key, previous_month
from gateway.stats.queries import EARLIEST_DAY, Scope, Tally, check_range, compute, select_figures
from gateway.stats.rankings import rankings, recent_alerts, top_items, top_reasons
from gateway.stats.schemas import StatsQuery
from gateway.web.keys import DEPS, SETTINGS, STORE

routes = web.RouteTableDef()

TREND_MONTHS = 12
TOP = 10
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_FIELDS = {"month": "月份", "from": "开始日期", "to": "结束日期", "mode": "统计期间"}


def _bad(field: str, why: str) -> PageError:
    return PageError(422, f"「{_FIELDS.get(field, field)}」{why}", title="无法统计")


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _bad(field, "不是有效的日期，请按 年-月-日 填写。") from None


def period_of(query: dict[str, str], today: date) -> tuple[str, date, date, date]:
    """(mode, first day, last day, ranking month) chosen by the page's GET form; a bad field is a 422."""
    mode = query.get("mode") or ("range" if query.get("from") or query.get("to") else "month")
    if mode == "range":
        if not query.get("from") or not query.get("to"):
            raise _bad("from" if not query.get("from") else "to", "未填写：按日期范围统计须填写开始和结束日期。")
        start, end = _day(query["from"], "from"), _day(query["to"], "to")
        try:
            start, end = check_range(start, end, today=today, default_days=1)
        except InvalidStatsQuery as exc:
            raise _bad(
                exc.field or "to", "不在可统计的范围内：结束日期不能早于开始日期，范围最长3年，且不能晚于今天。"
            ) from None
        return mode, start, end, end.replace(day=1)
    if mode != "month":
        raise _bad("mode", "只能是按月或按日期范围。")
    text = query.get("month") or f"{today:%Y-%m}"
    if not _MONTH.match(text) or month_start(text) > today.replace(day=1) or month_start(text).year < 2000:
        raise _bad("month", "须为不晚于本月的年月（例如 2026-03）。")
    first = month_start(text)
    return mode, first, date.fromordinal(next_month(first).toordinal() - 1), first


@routes.get("/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    p = person(request)
    deps = request.config_dict[DEPS]
    today = deps.calendar.local_date(deps.clock.now())
    mode, start, end, month = period_of(dict(request.query), today)
    scope = Scope.of(p.caller)
    trend_start = month
    for _ in range(TREND_MONTHS - 1):
        trend_start = max(previous_month(trend_start), EARLIEST_DAY)
    trend_end = date.fromordinal(next_month(month).toordinal() - 1)
    # The API's own query: a month as period=month&date=…, a range as from/to.
    query = StatsQuery.model_validate(
        {"period": "month", "date": start} if mode == "month" else {"from": start, "to": end}
    )
    min_sample = request.config_dict[SETTINGS].ranking_min_sample
    async with request.config_dict[STORE].transaction() as session:
        selection = await select_figures(session, query, scope=scope, today=today, catalogue=deps.catalogue)
        figures = await compute(session, selection, scope=scope, calendar=deps.calendar, catalogue=deps.catalogue)
        trend_query = StatsQuery.model_validate({"from": trend_start, "to": trend_end, "group_by": "month"})
        trend_selection = await select_figures(session, trend_query, scope=scope, today=today, catalogue=deps.catalogue)
        trend = await compute(session, trend_selection, scope=scope, calendar=deps.calendar, catalogue=deps.catalogue)
        units = await rankings(session, month=month, kind="unit", min_sample=min_sample, scope=scope)
        staff = await rankings(session, month=month, kind="staff", min_sample=min_sample, scope=scope)
        reasons = await top_reasons(session, start=start, end=end, scope=scope, catalogue=deps.catalogue, limit=TOP)
        items = await top_items(session, start=start, end=end, scope=scope, limit=TOP)
        alerts = await recent_alerts(session, start=start, end=end, scope=scope)
    by_month = {dict(k)["month"]: trend.indicators(t) for k, t in trend.groups.items()}
    rows = []
    m = trend_start
    while m <= month:
        label = period_key("month", m)
        rows.append((label, by_month.get(label) or trend.indicators(Tally())))
        m = next_month(m)
    total = figures.indicators(figures.total)
    return render(
        request,
        "stats.html",
        mode=mode,
        start=start,
        end=end,
        month=f"{month:%Y-%m}",
        this_month=f"{today:%Y-%m}",
        today=today,
        scope_label=scope.label,
        total=total,
        levels=[(level, LEVEL_WORDS[level], total.counts.get(str(level), 0)) for level in (5, 4, 3, 2, 1)],
        trend=rows,
        charts=trend_charts(rows),
        units=units,
        staff=staff,
        min_sample=min_sample,
        reasons=reasons,
        items=items,
        alerts=alerts,
    )


def trend_charts(rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """The monthly trend as SVG (presentation attributes only, so the console's CSP allows it)."""
    labels = [label[2:] for label, _ in rows]
    return {
        "good_rate": charts.line_chart(
            labels,
            [i.good_rate for _, i in rows],
            title="每月好评率",
            description="近12个月的好评率；具体数字见右侧表格。",
            chart_id="console-trend-good",
        ),
        "counts": charts.bar_chart(
            labels,
            [i.valid for _, i in rows],
            title="每月有效评价数与差评数",
            description="浅色柱为有效评价数，深色柱为差评数；具体数字见右侧表格。",
            chart_id="console-trend-counts",
            highlight=[i.counts.get("1", 0) + i.counts.get("2", 0) for _, i in rows],
        ),
    }
