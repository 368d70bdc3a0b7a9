"""The upload feed: claims upload records, sends them to the province, records every answer.

It works the way the outbox dispatcher does (gateway/messaging/dispatcher.py): a claim is a lease taken
with FOR UPDATE SKIP LOCKED on PostgreSQL, so several feeds never send the same record at once and a
feed killed mid-request leaves its records to be claimed again when the lease runs out; failures are
retried with the dispatcher's backoff; records the province refuses are set aside (dead letters) with
the province's message. Delivery is at least once: the province sees the same `record_id` on every try
of a record, so it can drop a repeat.

Versions of one evaluation go up in order: a record is claimed only when no earlier version of its
evaluation still waits or is being sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from gateway.clock import Clock, as_utc
from gateway.messaging.dispatcher import backoff_seconds
from gateway.passes import run_passes
from gateway.store.db import Store
from gateway.upload.mapping import local_day_bounds
from gateway.upload.models import UploadRecord
from gateway.upload.profile import ProvinceProfile
from gateway.upload.transport import Delivery, Transport

log = logging.getLogger(__name__)

U = UploadRecord
WAITING = ("pending", "sending")


@dataclass(frozen=True)
class FeedPolicy:
    lease_seconds: int = 60
    max_attempts: int = 0  # 0: retry until the province accepts (DESIGN §2 "retried until accepted")
    concurrency: int = 4
    base_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 900.0


@dataclass(frozen=True)
class _Claimed:
    id: int
    solo: bool
    payload: dict[str, Any]


class UploadFeed:
    def __init__(
        self, *, store: Store, profile: ProvinceProfile, transport: Transport, clock: Clock, policy: FeedPolicy
    ) -> None:
        self.store = store
        self.profile = profile
        self.transport = transport
        self.clock = clock
        self.policy = policy
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self, interval_seconds: float) -> None:
        await run_passes(self.run_once, interval_seconds=interval_seconds, what="upload feed", wake=self._wake)

    async def run_once(self) -> int:
        """Claim and send one round of requests; returns how many records were handled."""
        batch = self.profile.endpoint.batch_size
        claimed = await self.claim(batch * self.policy.concurrency)
        if not claimed:
            return 0
        requests: list[list[_Claimed]] = [[c] for c in claimed if c.solo or batch == 1]
        together = [c for c in claimed if not c.solo and batch > 1]
        requests += [together[i : i + batch] for i in range(0, len(together), batch)]
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(records: list[_Claimed]) -> None:
            async with gate:
                try:
                    delivery = await self.transport.send([r.payload for r in records])
                    await self._record([r.id for r in records], delivery)
                except Exception:  # one bad request must not stop the others; its lease brings it back
                    log.exception("upload failed unexpectedly", extra={"upload_ids": [r.id for r in records]})

        await asyncio.gather(*(one(r) for r in requests))
        return len(claimed)

    async def claim(self, limit: int) -> list[_Claimed]:
        """Lease due records to this feed, oldest first, at most one version of an evaluation at a time."""
        now = self.clock.now()
        ready = or_(
            and_(col(U.status) == "pending", col(U.next_attempt_at) <= now),
            and_(col(U.status) == "sending", col(U.lease_until) < now),
        )
        earlier = aliased(UploadRecord)
        blocked = (
            select(earlier.id)
            .where(earlier.evaluation_id == U.evaluation_id, earlier.version < U.version)
            .where(col(earlier.status).in_(WAITING))
            .exists()
        )
        query = select(U.id, U.solo, U.payload).where(ready, ~blocked).order_by(col(U.id)).limit(limit)
        async with self.store.transaction() as session:
            if self.store.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=U)
            rows = list((await session.exec(query)).all())
            ids = [row[0] for row in rows]
            if ids:
                await session.exec(
                    update(U)
                    .where(col(U.id).in_(ids))
                    .values(
                        status="sending",
                        lease_until=now + timedelta(seconds=self.policy.lease_seconds),
                        attempts=U.attempts + 1,
                        first_sent_at=func.coalesce(U.first_sent_at, now),
                        updated_at=now,
                    )
                )
        return [_Claimed(id=i, solo=bool(s), payload=dict(p)) for i, s, p in rows if i is not None]

    async def _record(self, ids: list[int], delivery: Delivery) -> None:
        now = self.clock.now()
        async with self.store.transaction() as session:
            query = select(U).where(col(U.id).in_(ids)).with_for_update()
            for record in (await session.exec(query)).all():
                if record.status != "sending":
                    continue  # retried or set aside by an operator meanwhile
                record.lease_until, record.updated_at = None, now
                if delivery.outcome == "accepted":
                    record.status, record.acknowledged_at = "acknowledged", now
                    record.error_code = None
                    continue
                record.error_code, record.last_error = delivery.code, delivery.detail[:2000]
                if delivery.outcome == "rejected" and len(ids) > 1:
                    # The province refused the batch: send each record alone, to find the one at fault.
                    record.status, record.solo, record.next_attempt_at = "pending", True, now
                elif delivery.outcome == "rejected" or (
                    self.policy.max_attempts and record.attempts >= self.policy.max_attempts
                ):
                    record.status = "failed"
                    log.warning(
                        "upload record set aside",
                        extra={
                            "record_key": record.record_key,
                            "error_code": delivery.code,
                            "attempts": record.attempts,
                        },
                    )
                else:
                    delay = delivery.retry_after_seconds
                    if delay is None:
                        delay = backoff_seconds(
                            record.attempts, self.policy.base_backoff_seconds, self.policy.max_backoff_seconds
                        )
                    record.status, record.next_attempt_at = "pending", now + timedelta(seconds=delay)


async def upload_status(store: Store, now: datetime) -> dict[str, Any]:
    """Counts by state and the age of the oldest record still waiting: the CLI's and /metrics' view."""
    async with store.transaction() as session:
        counts = dict((await session.exec(select(U.status, func.count()).group_by(U.status))).all())
        oldest = (await session.exec(select(func.min(U.created_at)).where(col(U.status).in_(WAITING)))).one()
    age = max(0.0, (now - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0
    return {
        "pending": counts.get("pending", 0) + counts.get("sending", 0),
        "sending": counts.get("sending", 0),
        "acknowledged": counts.get("acknowledged", 0),
        "failed": counts.get("failed", 0),
        "oldest_pending_seconds": age,
    }


async def set_aside(store: Store, limit: int = 50) -> list[UploadRecord]:
    """The records set aside, newest first, with the province's message."""
    async with store.transaction() as session:
        query = select(U).where(U.status == "failed").order_by(col(U.updated_at).desc(), col(U.id).desc()).limit(limit)
        return list((await session.exec(query)).all())


async def retry(store: Store, ids: list[int], now: datetime) -> int:
    """Put set-aside records back in the feed (once the cause is fixed); returns how many moved."""
    async with store.transaction() as session:
        done = await session.exec(
            update(U)
            .where(col(U.id).in_(ids), col(U.status) == "failed")
            .values(status="pending", attempts=0, solo=True, next_attempt_at=now, lease_until=None, updated_at=now)
        )
        return int(done.rowcount)


@dataclass
class Tally:
    recorded: int = 0
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0


async def day_counts(store: Store, day: date, timezone: str) -> dict[tuple[int, str], Tally]:
    """Per (level, channel): the evaluations given on a local day, and how many of their first records
    were sent, acknowledged and set aside."""
    start, end = local_day_bounds(day, timezone)
    # sqlmodel's select is typed for at most four columns; this one takes five.
    query = (
        select(  # type: ignore[call-overload]
            U.level, U.channel, U.status, func.count(), func.count(col(U.first_sent_at))
        )
        .where(U.version == 1, col(U.evaluated_at) >= start, col(U.evaluated_at) < end)
        .group_by(U.level, U.channel, U.status)
    )
    out: dict[tuple[int, str], Tally] = {}
    async with store.transaction() as session:
        for level, channel, status, count, sent in (await session.exec(query)).all():
            tally = out.setdefault((level, channel), Tally())
            tally.recorded += count
            tally.sent += sent
            tally.acknowledged += count if status == "acknowledged" else 0
            tally.failed += count if status == "failed" else 0
    return out
