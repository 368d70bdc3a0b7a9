"""The upload feed's Prometheus gauges, added to /metrics (gateway/web/health.py)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge

from gateway.store.db import Store
from gateway.upload.feed import upload_status


async def upload_gauges(registry: CollectorRegistry, store: Store, now: datetime) -> None:
    records = Gauge(
        "gateway_upload_records",
        "Upload records to the provincial platform by state (pending includes those being sent; failed: set aside)",
        ["state"],
        registry=registry,
    )
    oldest = Gauge(
        "gateway_upload_oldest_pending_seconds",
        "How long the oldest upload record still waiting has waited (0 when none waits)",
        registry=registry,
    )
    status = await upload_status(store, now)
    for state in ("pending", "sending", "acknowledged", "failed"):
        records.labels(state).set(status[state])
    oldest.set(status["oldest_pending_seconds"])
