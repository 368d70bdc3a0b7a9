"""HTTP: the department statistics API, exports, and the public statistics page and JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import xlsxwriter
from aiohttp import web
from pydantic import BaseModel

from gateway.orgs import Caller
from gateway.stats import charts
from gateway.stats.errors import InvalidStatsQuery
from gateway.stats.exports import (
    CHUNK_ROWS,
    EVALUATION_COLUMNS,
    TICKET_COLUMNS,
    evaluation_rows,
    safe_cell,
    ticket_rows,
)
from gateway.stats.periods import previous_month
from gateway.stats.public import FiguresCache, cached_figures, parse_month
from gateway.stats.queries import Scope, check_range, compute, select_figures
from gateway.stats.rankings import flag_states, rankings, recent_alerts, top_items, top_reasons, weekly
from gateway.stats.schemas import (
    AnalysisAnswer,
    AnalysisQuery,
    ExportQuery,
    Period,
    RankingAnswer,
    RankingQuery,
    StatsAnswer,
    StatsGroup,
    StatsQuery,
)
from gateway.store.db import Store
from gateway.tickets.calendar import WorkingCalendar
from gateway.web.http import parse_query, require_caller
from gateway.web.keys import DEPS, SETTINGS, STORE
from gateway.web.operations import Operation
from gateway.web.templating import environment

routes = web.RouteTableDef()

STATS_CACHE: web.AppKey[FiguresCache] = web.AppKey("stats_public_cache")
STATS_PAGES: web.AppKey[dict[str, str]] = web.AppKey("stats_public_pages")  # figures' JSON text -> rendered page
_CSS = Path(__file__).with_name("static") / "stats.css"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _today(request: web.Request) -> date:
    deps = request.app[DEPS]
    return deps.calendar.local_date(deps.clock.now())


def _json(model: BaseModel) -> web.Response:
    return web.json_response(text=model.model_dump_json(by_alias=True), headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/stats")
async def stats_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    query = parse_query(request, StatsQuery)
    deps = request.app[DEPS]
    scope = Scope.of(caller)
    async with request.app[STORE].transaction() as session:
        selection = await select_figures(session, query, scope=scope, today=_today(request), catalogue=deps.catalogue)
        figures = await compute(session, selection, scope=scope, calendar=deps.calendar, catalogue=deps.catalogue)
    answer = StatsAnswer(
        period=Period(start=selection.start, end=selection.end),
        scope=scope.label,
        group_by=list(selection.group_by),
        total=figures.indicators(figures.total),
        groups=[
            StatsGroup(key=dict(k), label=figures.label(k), indicators=figures.indicators(t))
            for k, t in sorted(figures.groups.items(), key=lambda kv: tuple(str(v) for _, v in kv[0]))
        ],
    )
    return _json(answer)


@routes.get("/api/v1/stats/rankings")
async def rankings_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    query = parse_query(request, RankingQuery)
    today = _today(request)
    month = parse_month(query.month, today) if query.month else previous_month(today.replace(day=1))
    min_sample = query.min_sample or request.app[SETTINGS].ranking_min_sample
    scope = Scope.of(caller)
    async with request.app[STORE].transaction() as session:
        entries = await rankings(session, month=month, kind=query.kind, min_sample=min_sample, scope=scope)
    return _json(
        RankingAnswer(
            month=f"{month:%Y-%m}", kind=query.kind, min_sample=min_sample, scope=scope.label, entries=entries
        )
    )


@routes.get("/api/v1/stats/analysis")
async def analysis_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    query = parse_query(request, AnalysisQuery)
    start, end = check_range(query.from_, query.to, today=_today(request), default_days=84)
    scope = Scope.of(caller)
    catalogue = request.app[DEPS].catalogue
    async with request.app[STORE].transaction() as session:
        answer = AnalysisAnswer(
            period=Period(start=start, end=end),
            scope=scope.label,
            top_reasons=await top_reasons(
                session, start=start, end=end, scope=scope, catalogue=catalogue, limit=query.limit
            ),
            top_items=await top_items(session, start=start, end=end, scope=scope, limit=query.limit),
            weekly=await weekly(session, start=start, end=end, scope=scope),
            alerts=await recent_alerts(session, start=start, end=end, scope=scope),
            flags=await flag_states(session, start=start, end=end, scope=scope, tz=request.app[DEPS].calendar.tz),
        )
    return _json(answer)


async def _export(request: web.Request, kind: str) -> web.StreamResponse:
    caller = await require_caller(request)
    query = parse_query(request, ExportQuery)
    start, end = check_range(query.from_, query.to, today=_today(request), default_days=30)
    deps = request.app[DEPS]
    return await export(
        request,
        store=request.app[STORE],
        kind=kind,
        fmt=query.format,
        caller=caller,
        start=start,
        end=end,
        calendar=deps.calendar,
        now=deps.clock.now(),
    )


@routes.get("/api/v1/exports/evaluations")
async def export_evaluations(request: web.Request) -> web.StreamResponse:
    return await _export(request, "evaluations")


@routes.get("/api/v1/exports/tickets")
async def export_tickets(request: web.Request) -> web.StreamResponse:
    return await _export(request, "tickets")


# --- the public page ----------------------------------------------------------------------------------


async def _public_text(request: web.Request) -> str:
    unknown = [name for name in request.query if name != "month"]
    if unknown:
        raise InvalidStatsQuery(f"unknown parameter {unknown[0]!r}; the page takes month=YYYY-MM", field=unknown[0])
    month = parse_month(request.query.get("month"), _today(request))
    app = request.app
    text = await cached_figures(
        app[STORE],
        app[STATS_CACHE],
        deps=app[DEPS],
        month=month,
        min_sample=app[SETTINGS].ranking_min_sample,
    )
    return text


@routes.get("/public/stats.json")
async def public_json(request: web.Request) -> web.Response:
    text = await _public_text(request)
    response = web.json_response(text=text)
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = f"public, max-age={int(request.app[SETTINGS].public_stats_ttl_seconds)}"
    response.headers["Access-Control-Allow-Origin"] = "*"  # open data: anyone may read it
    return response


@routes.get("/public/stats")
async def public_page(request: web.Request) -> web.Response:
    try:
        text = await _public_text(request)
    except InvalidStatsQuery as exc:
        return _html(environment().get_template("stats_error.html").render(message=exc.message), status=422, ttl=0)
    pages = request.app[STATS_PAGES]
    html = pages.get(text)
    if html is None:  # rendered once per computed figures, then served as is
        data = json.loads(text)
        html = environment().get_template("stats.html").render(data=data, charts=page_charts(data))
        if len(pages) >= 16:
            pages.clear()
        pages[text] = html
    return _html(html, status=200, ttl=int(request.app[SETTINGS].public_stats_ttl_seconds))


def _html(html: str, *, status: int, ttl: int) -> web.Response:
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = f"public, max-age={ttl}" if ttl else "no-store"
    return response


@routes.get("/public/stats.css")
async def public_css(request: web.Request) -> web.Response:
    response = web.Response(body=_CSS.read_bytes(), content_type="text/css", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def page_charts(data: dict[str, Any]) -> dict[str, Any]:
    """The page's SVG charts, from the same figures as its tables."""
    labels = [row["month"][2:] for row in data["trend"]]
    return {
        "good_rate": charts.line_chart(
            labels,
            [row["good_rate"] for row in data["trend"]],
            title="每月好评率",
            description="近12个月的好评率；具体数字见下表。",
            chart_id="trend-good",
        ),
        "counts": charts.bar_chart(
            labels,
            [row["valid"] for row in data["trend"]],
            title="每月有效评价数与差评数",
            description="浅色柱为有效评价数，深色柱为差评数；具体数字见下表。",
            chart_id="trend-counts",
            highlight=[row["counts"]["1"] + row["counts"]["2"] for row in data["trend"]],
        ),
    }


_CSV_XLSX = {
    "text/csv": "CSV (UTF-8 with BOM)",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "XLSX",
}

OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/stats",
        "Indicators in your jurisdiction, filtered and grouped",
        tag="statistics",
        operation_id="getStats",
        query=StatsQuery,
        response=StatsAnswer,
        errors=(401, 422),
        description=(
            "Valid evaluations only (rulings counted apart, under not_counted). Period: `period` + `date`, or "
            "`from` + `to` (at most 3 years). Group by any of region, approval, unit, item, staff, channel, "
            "reason, reason_kind and one period. Formulas: docs/statistics.md."
        ),
    ),
    Operation(
        "GET",
        "/api/v1/stats/rankings",
        "Monthly ranking of units or window staff (Art. 22)",
        tag="statistics",
        operation_id="getRankings",
        query=RankingQuery,
        response=RankingAnswer,
        errors=(401, 422),
        description="Ordered by the Wilson lower bound of 好评率; below the minimum sample: 样本不足.",
    ),
    Operation(
        "GET",
        "/api/v1/stats/analysis",
        "Reasons and items behind bad reviews, weekly trend, alerts (Art. 23)",
        tag="statistics",
        operation_id="getAnalysis",
        query=AnalysisQuery,
        response=AnalysisAnswer,
        errors=(401, 422),
    ),
    Operation(
        "GET",
        "/api/v1/exports/evaluations",
        "Export evaluations in your jurisdiction (CSV or XLSX)",
        tag="statistics",
        operation_id="exportEvaluations",
        query=ExportQuery,
        errors=(401, 422),
        media_types=_CSV_XLSX,
        description="Streamed; phone numbers masked; cells that could be read as formulas start with '.",
    ),
    Operation(
        "GET",
        "/api/v1/exports/tickets",
        "Export work orders in your jurisdiction (CSV or XLSX)",
        tag="statistics",
        operation_id="exportTickets",
        query=ExportQuery,
        errors=(401, 422),
        media_types=_CSV_XLSX,
        description="Streamed; phone numbers masked; cells that could be read as formulas start with '.",
    ),
]


# Exports: the rows (gateway.stats.exports) streamed out as CSV or XLSX.


async def stream_csv(
    request: web.Request, *, filename: str, header: Sequence[str], rows: AsyncIterator[list[Any]]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # Excel opens UTF-8 CSV correctly only with the byte-order mark
    writer.writerow(header)
    count = 0
    async for row in rows:
        writer.writerow([safe_cell(v) for v in row])
        count += 1
        if count % CHUNK_ROWS == 0:
            await response.write(buffer.getvalue().encode("utf-8"))
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode("utf-8"))
    await response.write_eof()
    return response


async def stream_xlsx(
    request: web.Request, *, filename: str, header: Sequence[str], rows: AsyncIterator[list[Any]]
) -> web.StreamResponse:
    """XlsxWriter in constant-memory mode writes the sheet row by row to a temporary file, streamed out."""
    with tempfile.TemporaryFile() as out:
        workbook = xlsxwriter.Workbook(
            out,
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        sheet = workbook.add_worksheet(filename[:31])
        bold = workbook.add_format({"bold": True})
        for c, name in enumerate(header):
            sheet.write_string(0, c, name, bold)
        r = 0
        async for row in rows:
            r += 1
            for c, value in enumerate(row):
                cell = safe_cell(value)
                if isinstance(cell, (int, float)):
                    sheet.write_number(r, c, cell)
                else:
                    sheet.write_string(r, c, cell)
        await asyncio.to_thread(workbook.close)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "Content-Disposition": f'attachment; filename="{filename}.xlsx"',
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        out.seek(0)
        await _copy(out, response)
        await response.write_eof()
        return response


async def _copy(source: BinaryIO, response: web.StreamResponse) -> None:
    while True:
        block = await asyncio.to_thread(source.read, 256 * 1024)
        if not block:
            return
        await response.write(block)


async def export(
    request: web.Request,
    *,
    store: Store,
    kind: str,
    fmt: str,
    caller: Caller,
    start: date,
    end: date,
    calendar: WorkingCalendar,
    now: datetime,
) -> web.StreamResponse:
    """Stream one export; the rows are read in one transaction while they are written out."""
    async with store.transaction() as session:
        if kind == "evaluations":
            rows = evaluation_rows(session, caller=caller, start=start, end=end, calendar=calendar)
            header: Sequence[str] = EVALUATION_COLUMNS
        else:
            rows = ticket_rows(session, caller=caller, start=start, end=end, calendar=calendar, now=now)
            header = TICKET_COLUMNS
        name = f"{kind}-{start.isoformat()}-{end.isoformat()}"
        writer = stream_csv if fmt == "csv" else stream_xlsx
        return await writer(request, filename=name, header=header, rows=rows)
