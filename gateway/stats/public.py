"""The public statistics (Art. 20 "评价结果及整改情况向社会公开"): figures, their cache, page and JSON.

Every figure comes from `gateway.stats.queries` and `gateway.stats.rankings`, the functions the department
API uses. Nothing on the page identifies a citizen: no phone number, name or text of theirs; staff
members are not named. The evaluation log's head is published beside the figures (`published_log_head`,
recorded in `published_head` so that `gateway audit verify` checks it against the chain).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.evaluations.reasons import LEVEL_WORDS
from gateway.privacy import redact
from gateway.stats.periods import month_start, next_month, period_key, previous_month
from gateway.stats.queries import PUBLIC, Selection, compute
from gateway.stats.rankings import rankings
from gateway.store.db import Store
from gateway.store.models import EvaluationAddendum, EvaluationDecision, Invitation, Organisation, Ticket, TicketEvent

TREND_MONTHS = 12
BAD_REVIEWS_SHOWN = 50
SUMMARY_CHARS = 200

# (session, at) -> {"seq", "hash", "published_at"} | None: publishes the evaluation-log head with the figures.
LogHead = Callable[[AsyncSession, datetime], Awaitable[dict[str, Any] | None]]

STATUS_WORDS = {
    "dispatching": "待派单",
    "transferred": "已转办",
    "accepted": "已受理",
    "in_progress": "整改中",
    "extension_requested": "申请延期",
    "appealed": "申诉中",
    "resolved": "已整改待回访",
    "callback_unsatisfied": "回访不满意",
    "closed_satisfied": "已办结(回访满意)",
    "closed_unsatisfied": "已办结(回访不满意)",
    "closed_no_answer": "已办结(未接回访)",
    "closed_invalid": "申诉成立",
}


async def published_log_head(session: AsyncSession, at: datetime) -> dict[str, Any] | None:
    """The evaluation log's head, recorded as published with these figures (docs/audit.md); None while empty."""
    from gateway.audit.log import publish_head

    head = await publish_head(session, at=at, where="public_stats")
    if head is None:
        return None
    return {"seq": head.seq, "hash": head.hash, "published_at": at.isoformat()}


async def public_figures(
    session: AsyncSession, *, deps: Deps, month: date, min_sample: int, log_head: LogHead = published_log_head
) -> dict[str, Any]:
    """Everything the public page shows, as JSON-ready data."""
    cal, cat = deps.calendar, deps.catalogue
    end = next_month(month)
    last_day = date.fromordinal(end.toordinal() - 1)
    first_trend = month
    for _ in range(TREND_MONTHS - 1):
        first_trend = previous_month(first_trend)

    async def figures(group_by: tuple[str, ...], start: date, stop: date) -> Any:
        return await compute(
            session, Selection(start=start, end=stop, group_by=group_by), scope=PUBLIC, calendar=cal, catalogue=cat
        )

    # One count by county and unit gives the city (its total), the counties and the units (their sums).
    by_unit = await figures(("region", "unit"), month, last_day)
    city, counties, units = by_unit, by_unit.folded("region"), by_unit.folded("unit")
    trend = await figures(("month",), first_trend, last_day)
    months = []
    m = first_trend
    while m <= month:
        months.append(period_key("month", m))
        m = next_month(m)
    trend_by_month = {dict(k)["month"]: trend.indicators(t) for k, t in trend.groups.items()}
    ranked = await rankings(session, month=month, kind="unit", min_sample=min_sample, scope=PUBLIC)
    now = deps.clock.now()
    return {
        "month": period_key("month", month),
        "generated_at": now.isoformat(),
        "city": city.indicators(city.total).model_dump(mode="json"),
        "counties": [
            {
                "region": dict(k)["region"],
                "name": counties.label(k)["region"],
                **counties.indicators(t).model_dump(mode="json"),
            }
            for k, t in sorted(counties.groups.items())
        ],
        "units": [
            {"unit": dict(k)["unit"], "name": units.label(k)["unit"], **units.indicators(t).model_dump(mode="json")}
            for k, t in sorted(units.groups.items())
        ],
        "trend": [
            {
                "month": label,
                **(
                    trend_by_month[label].model_dump(mode="json")
                    if label in trend_by_month
                    else trend.indicators(_empty()).model_dump(mode="json")
                ),
            }
            for label in months
        ],
        "rankings": [e.model_dump(mode="json", exclude={"staff"}) for e in ranked],
        "ranking_min_sample": min_sample,
        "bad_reviews": await bad_reviews(session, deps=deps, start=month, end=last_day),
        "evaluation_log_head": await log_head(session, now),
    }


def _empty() -> Any:
    from gateway.stats.queries import Tally

    return Tally()


async def bad_reviews(session: AsyncSession, *, deps: Deps, start: date, end: date) -> list[dict[str, Any]]:
    """The month's valid bad reviews and their rectification, newest first, with nothing about the citizen."""
    tz = deps.calendar.tz
    since = datetime.combine(start, datetime.min.time(), tzinfo=tz)
    until = datetime.combine(date.fromordinal(end.toordinal() + 1), datetime.min.time(), tzinfo=tz)
    ruled = select(EvaluationDecision.evaluation_id)
    rows = (
        await session.exec(
            select(Ticket, Invitation.item_name, Organisation.name)
            .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
            .join(Organisation, col(Organisation.id) == Invitation.org_id)
            .where(
                col(Ticket.created_at) >= since, col(Ticket.created_at) < until, col(Ticket.evaluation_id).not_in(ruled)
            )
            .order_by(col(Ticket.id).desc())
            .limit(BAD_REVIEWS_SHOWN)
        )
    ).all()
    if not rows:
        return []
    ids = [t.id for t, _, _ in rows]
    eval_ids = [t.evaluation_id for t, _, _ in rows]
    from gateway.store.models import Evaluation

    codes: dict[int, set[int]] = {}
    for e in (await session.exec(select(Evaluation).where(col(Evaluation.id).in_(eval_ids)))).all():
        if e.id is None:
            raise BrokenInvariant("evaluation.id is missing")
        codes[e.id] = set(e.reason_codes)
    for a in (
        await session.exec(select(EvaluationAddendum).where(col(EvaluationAddendum.evaluation_id).in_(eval_ids)))
    ).all():
        codes.setdefault(a.evaluation_id, set()).update(a.reason_codes)
    summaries: dict[int, str] = {}
    events = await session.exec(
        select(TicketEvent)
        .where(col(TicketEvent.ticket_id).in_(ids), TicketEvent.action == "resolve")
        .order_by(col(TicketEvent.id))
    )
    for event in events.all():
        summaries[event.ticket_id] = str(event.data.get("rectification", ""))
    out = []
    for t, item_name, unit_name in rows:
        reason_codes = sorted(codes.get(t.evaluation_id, set()))
        out.append(
            {
                "item": item_name,
                "unit": unit_name,
                "date": as_utc(t.created_at).astimezone(tz).date().isoformat(),
                "level": t.level,
                "level_words": LEVEL_WORDS.get(t.level, ""),
                "reasons": [
                    {"code": c, "label": r.label if (r := deps.catalogue.get(c)) else str(c)} for c in reason_codes
                ],
                "status": t.status,
                "status_words": STATUS_WORDS.get(t.status, t.status),
                "rectification": _summary(summaries.get(t.id, "")),  # type: ignore[arg-type]
            }
        )
    return out


def _summary(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


class FiguresCache:
    """The public figures, kept for a few seconds in the process (and in Redis when there is one), and
    computed once for a crowd of visitors arriving together."""

    def __init__(self, ttl_seconds: float, redis: Any = None, prefix: str = "gateway:stats:public:") -> None:
        self.ttl_seconds = ttl_seconds
        self.redis = redis
        self.prefix = prefix
        self._local: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[dict[str, Any]]]) -> str:
        """The JSON text of the figures under `key`, computing them when no fresh copy exists."""
        found = await self._fresh(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = await self._fresh(key)
            if found is not None:
                return found
            text = json.dumps(await compute(), ensure_ascii=False, separators=(",", ":"))
            if self.ttl_seconds > 0:
                self._local[key] = (time.monotonic() + self.ttl_seconds, text)
                if self.redis is not None:
                    await self.redis.set(self.prefix + key, text, px=int(self.ttl_seconds * 1000))
            return text

    async def _fresh(self, key: str) -> str | None:
        held = self._local.get(key)
        if held is not None and held[0] > time.monotonic():
            return held[1]
        if self.redis is not None and self.ttl_seconds > 0:
            text = await self.redis.get(self.prefix + key)
            if text is not None:
                text = text.decode() if isinstance(text, bytes) else text
                self._local[key] = (time.monotonic() + min(self.ttl_seconds, 5.0), text)
                return text
        return None


async def cached_figures(
    store: Store,
    cache: FiguresCache,
    *,
    deps: Deps,
    month: date,
    min_sample: int,
    log_head: LogHead = published_log_head,
) -> str:
    async def compute_now() -> dict[str, Any]:
        async with store.transaction() as session:
            return await public_figures(session, deps=deps, month=month, min_sample=min_sample, log_head=log_head)

    return await cache.get(f"{period_key('month', month)}:{min_sample}", compute_now)


def parse_month(text: str | None, today: date) -> date:
    from gateway.stats.errors import InvalidStatsQuery

    if text is None:
        return today.replace(day=1)
    try:
        first = month_start(text)
    except ValueError:
        raise InvalidStatsQuery("month must be YYYY-MM", field="month") from None
    if len(text) != 7 or first > today.replace(day=1) or first.year < 2000:
        raise InvalidStatsQuery("month must be YYYY-MM, not in the future", field="month")
    return first
