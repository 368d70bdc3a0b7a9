"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func
from sqlmodel import select

from gateway.sms.inbox import inbox_status
from gateway.store.models import OutboundMessage, Ticket
from gateway.web.keys import DEPS, REDIS, STORE

routes = web.RouteTableDef()
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _checks(app: web.Application) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(app[STORE].ping(), timeout=3)
        checks["database"] = "ok"
    except Exception as exc:  # the answer says what is down, not why in detail
        checks["database"] = f"down: {type(exc).__name__}"
    redis = app.get(REDIS)
    if redis is not None:
        try:
            await asyncio.wait_for(redis.ping(), timeout=3)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"down: {type(exc).__name__}"
    return checks


# What each part needs. Intake (webhooks, the department API, the rating page) stores into the
# database only; processing (SMS replies, the bot's conversations, timers) also needs Redis when it
# is configured. A load balancer asks /readyz, which is intake: an outage of Redis must not send the
# webhooks away while the inbox can still take them.
_NEEDS = {"intake": ("database",), "processing": ("database", "redis")}


def _readiness(checks: dict[str, str]) -> dict[str, str]:
    return {
        part: "ready" if all(checks.get(name, "ok") == "ok" for name in needs) else "not ready"
        for part, needs in _NEEDS.items()
    }


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Intake readiness (200 or 503), with processing's readiness and each check in the body."""
    return await _answer(request, "intake")


@routes.get("/readyz/processing")
async def readyz_processing(request: web.Request) -> web.Response:
    """Processing readiness: 503 while the conversations cannot run (database or Redis down)."""
    return await _answer(request, "processing")


async def _answer(request: web.Request, part: str) -> web.Response:
    checks = await _checks(request.app)
    parts = _readiness(checks)
    ready = parts[part] == "ready"
    body = {"status": "ready" if ready else "not ready", **parts, "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


def metrics_registry() -> tuple[CollectorRegistry, Gauge, Gauge, Gauge, Gauge, Gauge]:
    registry = CollectorRegistry()
    inbox = Gauge(
        "gateway_sms_inbox_messages",
        "Inbound SMS waiting to be processed, and set aside after repeated failures",
        ["state"],
        registry=registry,
    )
    inbox_age = Gauge(
        "gateway_sms_inbox_oldest_pending_seconds",
        "How long the oldest inbound SMS still waiting has waited (0 when none waits)",
        registry=registry,
    )
    outbox = Gauge(
        "gateway_outbox_messages", "Outbox messages by channel and status", ["channel", "status"], registry=registry
    )
    tickets = Gauge("gateway_tickets", "Tickets by status", ["status"], registry=registry)
    overdue = Gauge("gateway_tickets_overdue", "Open tickets past their due time", registry=registry)
    return registry, outbox, tickets, overdue, inbox, inbox_age


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry, outbox, tickets, overdue, inbox, inbox_age = metrics_registry()
    now = request.app[DEPS].clock.now()
    async with request.app[STORE].transaction() as session:
        for channel, status, count in (
            await session.exec(
                select(OutboundMessage.channel, OutboundMessage.status, func.count()).group_by(
                    OutboundMessage.channel, OutboundMessage.status
                )
            )
        ).all():
            outbox.labels(channel, status).set(count)
        for status, count in (await session.exec(select(Ticket.status, func.count()).group_by(Ticket.status))).all():
            tickets.labels(status).set(count)
        late = await session.exec(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.due_at < now, Ticket.closed_at.is_(None), Ticket.resolved_at.is_(None))  # type: ignore[union-attr]
        )
        overdue.set(late.one())
    backlog = await inbox_status(request.app[STORE], now)
    inbox.labels("pending").set(backlog["pending"] or 0)
    inbox.labels("failed").set(backlog["set_aside"] or 0)
    inbox_age.set(backlog["oldest_pending_seconds"] or 0)
    from gateway.upload.metrics import upload_gauges

    await upload_gauges(registry, request.app[STORE], now)
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
