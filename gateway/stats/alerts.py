"""The bad-review alert (Art. 23): a unit whose 差评率 rises clearly above its own recent baseline.

"Clearly" is a one-sided exact binomial test: over the last 7 local days (ending yesterday) a unit had
`bad` bad reviews among `valid` valid evaluations; its baseline is the 56 days before, with the rate
p0 = (baseline_bad + 1) / (baseline_valid + 2) (a zero baseline is not a certainty). The unit is flagged
when bad ≥ 5, baseline_valid ≥ 30, bad/valid > p0 and P(X ≥ bad | X ~ Binomial(valid, p0)) < 0.01.
Each flag is an event (a stats_alert row, once per unit and window) sent to the reminder webhook
(GATEWAY_OVERDUE_WEBHOOK_URL) by a small sender of its own; one that fails is tried again next pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.evaluations.reasons import BAD_LEVELS
from gateway.stats.models import StatsAlert, StatsUnitDaily
from gateway.stats.rollup import VALID
from gateway.store.db import Store
from gateway.store.models import Organisation
from gateway.store.upsert import insert_if_absent

log = logging.getLogger(__name__)

WINDOW_DAYS = 7
BASELINE_DAYS = 56
MIN_BAD = 5
MIN_BASELINE = 30
ALPHA = 0.01
WEBHOOK_TIMEOUT_SECONDS = 10.0
MAX_SEND_ATTEMPTS = 20

Send = Callable[[dict[str, Any]], Awaitable[None]]


def binomial_tail(x: int, n: int, p: float) -> float:
    """P(X ≥ x) for X ~ Binomial(n, p), summed in log space."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        for k in range(x, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def is_clear_rise(bad: int, valid: int, baseline_bad: int, baseline_valid: int) -> tuple[bool, float]:
    """The test of the module docstring; returns (flag, p-value)."""
    if valid == 0 or baseline_valid < MIN_BASELINE or bad < MIN_BAD:
        return False, 1.0
    p0 = (baseline_bad + 1) / (baseline_valid + 2)
    if bad / valid <= p0:
        return False, 1.0
    p_value = binomial_tail(bad, valid, p0)
    return p_value < ALPHA, p_value


async def _bad_and_valid(session: AsyncSession, start: date, end: date) -> dict[int, tuple[int, int]]:
    t: Any = StatsUnitDaily
    bad = func.sum(case((col(t.level).in_(BAD_LEVELS), t.n), else_=0))
    stmt = (
        select(t.unit_org_id, bad, func.sum(t.n))
        .where(t.day >= start, t.day <= end, t.status == VALID, t.level > 0)
        .group_by(t.unit_org_id)
    )
    return {u: (int(b or 0), int(n or 0)) for u, b, n in (await session.exec(stmt)).all()}


async def scan(session: AsyncSession, *, today: date, at: datetime) -> list[StatsAlert]:
    """Record an alert for each unit whose last week is clearly worse than its baseline; returns the new ones."""
    window_end = today - timedelta(days=1)
    window_start = window_end - timedelta(days=WINDOW_DAYS - 1)
    baseline_end = window_start - timedelta(days=1)
    baseline_start = baseline_end - timedelta(days=BASELINE_DAYS - 1)
    current = await _bad_and_valid(session, window_start, window_end)
    baseline = await _bad_and_valid(session, baseline_start, baseline_end)
    raised = []
    for unit_id, (bad, valid) in sorted(current.items()):
        base_bad, base_valid = baseline.get(unit_id, (0, 0))
        flag, p_value = is_clear_rise(bad, valid, base_bad, base_valid)
        if not flag:
            continue
        inserted = await insert_if_absent(
            session,
            StatsAlert,
            unit_org_id=unit_id,
            window_start=window_start,
            window_end=window_end,
            bad=bad,
            valid=valid,
            baseline_bad=base_bad,
            baseline_valid=base_valid,
            p_value=p_value,
            created_at=at,
            attempts=0,
        )
        if inserted:
            found = (
                await session.exec(
                    select(StatsAlert).where(StatsAlert.unit_org_id == unit_id, StatsAlert.window_end == window_end)
                )
            ).one()
            raised.append(found)
            log.info(
                "bad-review rate alert", extra={"unit_org_id": unit_id, "bad": bad, "valid": valid, "p_value": p_value}
            )
    return raised


def payload(alert: StatsAlert, org: Organisation | None) -> dict[str, Any]:
    return {
        "kind": "bad_review_rate_alert",
        "org": {"code": org.code if org else None, "name": org.name if org else None},
        "window": {"from": alert.window_start.isoformat(), "to": alert.window_end.isoformat()},
        "bad": alert.bad,
        "valid": alert.valid,
        "baseline": {
            "bad": alert.baseline_bad,
            "valid": alert.baseline_valid,
            "from": (alert.window_start - timedelta(days=BASELINE_DAYS)).isoformat(),
        },
        "p_value": alert.p_value,
    }


async def send_pending(store: Store, send: Send, *, at: datetime) -> int:
    """Send every alert not yet delivered; a failure is counted and tried again on the next pass."""
    async with store.transaction() as session:
        pending = (
            await session.exec(
                select(StatsAlert)
                .where(col(StatsAlert.sent_at).is_(None), StatsAlert.attempts < MAX_SEND_ATTEMPTS)
                .order_by(col(StatsAlert.id))
            )
        ).all()
        bodies = [(a.id, payload(a, await session.get(Organisation, a.unit_org_id))) for a in pending]
    sent = 0
    for alert_id, body in bodies:
        try:
            await send(body)
        except Exception as exc:  # the webhook's fault is logged; the alert stays pending
            log.warning("alert not delivered: %s", exc, extra={"alert_id": alert_id})
            async with store.transaction() as session:
                alert = await session.get(StatsAlert, alert_id)
                if alert is not None:
                    alert.attempts += 1
            continue
        async with store.transaction() as session:
            alert = await session.get(StatsAlert, alert_id)
            if alert is not None:
                alert.sent_at = at
                alert.attempts += 1
        sent += 1
    return sent


async def one_pass(store: Store, send: Send, *, today: date, at: datetime) -> int:
    async with store.transaction() as session:
        raised = await scan(session, today=today, at=at)
    await send_pending(store, send, at=at)
    return len(raised)


class AlertFailed(Exception):
    """The webhook did not take the alert."""


async def log_sender(body: dict[str, Any]) -> None:
    log.warning("bad-review rate alert (no webhook configured): %s", body)


__all__ = ["binomial_tail", "is_clear_rise", "one_pass", "scan", "send_pending"]
