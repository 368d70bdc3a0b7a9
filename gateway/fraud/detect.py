"""The fraud detector (Art. 19): reads new evaluations in id order and flags suspicious patterns.

One pass, in one transaction: lock the cursor row (a second detector waits its turn), read the next
batch of evaluations (and of addenda, for their texts) after the cursor, run every rule over the batch
and what each rule needs of the past, write the flags with their evaluations, move the cursor. A pass
that fails leaves nothing behind and the next one reads the same batch again; a flag is never written
twice because the cursor moves with the flags, and the database refuses a second link of one evaluation
under one rule.

Only evaluations at least `lag` old are read: ids are handed out before commit, so a slow transaction
could commit an id below one already read; the lag leaves it time to.

Rules (docs/fraud.md has their reasons): burst, staff_rater, fast, device, address, staff_share,
targeted, near_duplicate. Flags never touch a rating.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Result, Select, any_, bindparam, distinct, func, insert, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col
from sqlmodel import select as sqlmodel_select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock, as_utc
from gateway.fraud import texts
from gateway.fraud.models import FlagEvaluation, FraudCursor, RatingSignal, StaffContact, StaffTally, TextBand
from gateway.privacy import redact
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.store.models import (
    Citizen,
    Evaluation,
    EvaluationAddendum,
    FraudFlag,
    Invitation,
    Organisation,
    OutboundMessage,
)
from gateway.store.upsert import dialect_insert, insert_if_absent

log = logging.getLogger(__name__)

RULES = ("burst", "staff_rater", "fast", "device", "address", "staff_share", "targeted", "near_duplicate")
BAD_LEVELS = (1, 2)
_CHUNK = 500  # values per IN (…) list and rows per multi-row INSERT: far below both databases' limits


@dataclass(frozen=True)
class Thresholds:
    """Every rule's threshold, from settings (GATEWAY_FRAUD_*)."""

    burst_count: int = 5
    burst_window: timedelta = timedelta(minutes=30)
    staff_rater_scope: str = "region"
    fast_seconds: float = 5.0
    device_count: int = 5
    address_count: int = 30
    device_window: timedelta = timedelta(hours=24)
    share_min_sample: int = 30
    share_min_peers: int = 10
    share_z: float = 3.5
    targeted_count: int = 3
    targeted_window: timedelta = timedelta(days=30)
    text_min_chars: int = 12
    text_similarity: float = 0.7
    text_numbers: int = 3
    text_window: timedelta = timedelta(days=30)
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(
            burst_count=s.fraud_burst_count,
            burst_window=timedelta(minutes=s.fraud_burst_minutes),
            staff_rater_scope=s.fraud_staff_rater_scope,
            fast_seconds=s.fraud_fast_seconds,
            device_count=s.fraud_device_count,
            address_count=s.fraud_address_count,
            device_window=timedelta(hours=s.fraud_device_hours),
            share_min_sample=s.fraud_share_min_sample,
            share_min_peers=s.fraud_share_min_peers,
            share_z=s.fraud_share_z,
            targeted_count=s.fraud_targeted_count,
            targeted_window=timedelta(days=s.fraud_targeted_days),
            text_min_chars=s.fraud_text_min_chars,
            text_similarity=s.fraud_text_similarity,
            text_numbers=s.fraud_text_numbers,
            text_window=timedelta(days=s.fraud_text_days),
            timezone=s.timezone,
        )


@dataclass(slots=True)
class Rated:
    """An evaluation as the detector reads it."""

    id: int
    citizen_id: int | None
    phone_hash: str | None
    level: int
    staff_id: str | None
    channel: str
    at: datetime
    content: str
    invitation_id: int
    org_id: int
    region_code: str
    address_hash: str | None
    device_hash: str | None
    opened_at: datetime | None


@dataclass(slots=True)
class Past:
    """An earlier (or same-batch) evaluation a rule looks back at."""

    id: int
    key: Any
    at: datetime
    region_code: str
    invitation_id: int = 0


@dataclass
class Finding:
    rule: str
    subject: str
    evaluation_ids: set[int]
    regions: set[str]
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    evaluations: int = 0
    addenda: int = 0
    flags: int = 0

    @property
    def handled(self) -> int:
        return self.evaluations + self.addenda


def common_region(regions: Iterable[str]) -> str:
    """The narrowest region holding all: the county, else the city (…00), else the province (…0000)."""
    found = set(regions)
    if len(found) == 1:
        return next(iter(found))
    if len({r[:4] for r in found}) == 1:
        return next(iter(found))[:4] + "00"
    if len({r[:2] for r in found}) == 1:
        return next(iter(found))[:2] + "0000"
    return "000000"


def wilson_lower(successes: int, n: int, z: float = 1.96) -> float:
    """The lower bound of the Wilson score interval: a share that a small sample cannot inflate."""
    if n == 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def robust_z(values: list[float], floors: list[float] | None = None) -> list[float] | None:
    """Modified z-scores (Iglewicz and Hoaglin): (x - median) / (MAD / 0.6745), the MAD replaced by the mean
    absolute deviation when more than half the values are equal. `floors` bound each value's scale from
    below by its own sampling noise: five peers that happen to agree closely must not make noise look
    extreme. None when nothing spreads at all."""
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    scale = statistics.median(deviations) / 0.6745
    if scale == 0:
        scale = 1.253314 * statistics.fmean(deviations)
    out = []
    for index, value in enumerate(values):
        bound = max(scale, floors[index] if floors else 0.0)
        if bound == 0:
            return None
        out.append((value - median) / bound)
    return out


def _members(session: AsyncSession, values: list[Any]) -> Iterable[Any]:
    """Conditions `column IN values`, as few as the database allows: on PostgreSQL one `= ANY(array)`
    with a single parameter (nothing to expand and compile per value), on SQLite lists of _CHUNK."""
    if not values:
        return
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        yield lambda column: column == any_(bindparam(None, values, type_=ARRAY(column.type)))
        return
    for chunk in _chunks(values):
        yield lambda column, chunk=chunk: column.in_(chunk)


def _chunks(values: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Detector:
    """Runs passes over the store; `run_once` is one pass, `run_forever` the app's loop."""

    def __init__(self, store: Store, settings: Settings, clock: Clock, *, thresholds: Thresholds | None = None) -> None:
        self.store = store
        self.clock = clock
        self.batch_size = settings.fraud_batch_size
        self.lag = timedelta(seconds=settings.fraud_lag_seconds)
        self.t = thresholds or Thresholds.from_settings(settings)
        self._tz = ZoneInfo(self.t.timezone)
        self._last_period: tuple[datetime, datetime, str] | None = None

    async def run_forever(self, interval_seconds: float) -> None:
        from gateway.passes import run_passes

        async def one() -> int:
            return (await self.run_once()).handled

        # A pass that read something is followed at once by the next: a backlog (after a restart, a bulk
        # import) is worked off at the detector's own speed, not one batch per interval.
        await run_passes(one, interval_seconds=interval_seconds, what="fraud detection", wake=asyncio.Event())

    async def run_until_idle(self) -> PassResult:
        """Passes until nothing new is left (tests, the demo, the benchmark)."""
        total = PassResult()
        while True:
            result = await self.run_once()
            total.evaluations += result.evaluations
            total.addenda += result.addenda
            total.flags += result.flags
            if not result.handled:
                return total

    async def run_once(self) -> PassResult:
        """One pass over the next batch; everything it writes commits together with the cursor."""
        now = self.clock.now()
        cutoff = now - self.lag
        async with self.store.transaction() as session:
            evaluation_cursor = await _lock_cursor(session, "evaluation", now)
            addendum_cursor = await _lock_cursor(session, "addendum", now)
            rows = await self._read_evaluations(session, evaluation_cursor.last_id, cutoff)
            addenda = await self._read_addenda(session, addendum_cursor.last_id, cutoff)
            result = PassResult(evaluations=len(rows), addenda=len(addenda))
            if not rows and not addenda:
                return result
            findings: list[Finding] = []
            if rows:
                max_id = rows[-1].id
                findings += await self._burst(session, rows, max_id)
                findings += await self._staff_rater(session, rows)
                findings += await self._fast(session, rows)
                findings += await self._devices(session, rows, max_id)
                findings += await self._targeted(session, rows, max_id)
                findings += await self._staff_share(session, rows, max_id)
            findings += await self._near_duplicates(session, rows, addenda)
            result.flags = await self._write(session, findings, now)
            if rows:
                evaluation_cursor.last_id, evaluation_cursor.updated_at = rows[-1].id, now
            if addenda:
                addendum_cursor.last_id, addendum_cursor.updated_at = addenda[-1][0], now
            session.add_all([evaluation_cursor, addendum_cursor])
        if result.flags:
            log.info("fraud flags raised", extra={"flags": result.flags, "evaluations": result.evaluations})
        return result

    # --- reading --------------------------------------------------------------------------------

    async def _read_evaluations(self, session: AsyncSession, after: int, cutoff: datetime) -> list[Rated]:
        e, i, c, s = Evaluation, Invitation, Citizen, RatingSignal
        query = (
            select(
                col(e.id),
                col(e.citizen_id),
                col(c.phone_hash),
                col(e.level),
                col(e.staff_id),
                col(e.channel),
                col(e.created_at),
                col(e.content),
                col(e.invitation_id),
                col(i.org_id),
                col(i.region_code),
                col(s.address_hash),
                col(s.device_hash),
                col(s.opened_at),
            )
            .join(i, col(i.id) == col(e.invitation_id))
            .outerjoin(c, col(c.id) == col(e.citizen_id))
            .outerjoin(s, col(s.evaluation_id) == col(e.id))
            .where(col(e.id) > after)
            .order_by(col(e.id))
            .limit(self.batch_size)
        )
        rows = []
        for r in await _rows(session, query):
            at = as_utc(r[6])
            if at > cutoff:
                break  # in id order: stop at the first one too recent, read it next time
            rows.append(
                Rated(
                    id=r[0],
                    citizen_id=r[1],
                    phone_hash=r[2],
                    level=r[3],
                    staff_id=r[4],
                    channel=r[5],
                    at=at,
                    content=r[7] or "",
                    invitation_id=r[8],
                    org_id=r[9],
                    region_code=r[10],
                    address_hash=r[11],
                    device_hash=r[12],
                    opened_at=as_utc(r[13]) if r[13] else None,
                )
            )
        return rows

    async def _read_addenda(
        self, session: AsyncSession, after: int, cutoff: datetime
    ) -> list[tuple[int, int, str, datetime, int | None, str]]:
        a, e, i = EvaluationAddendum, Evaluation, Invitation
        query = (
            select(
                col(a.id),
                col(a.evaluation_id),
                col(a.content),
                col(a.created_at),
                col(e.citizen_id),
                col(i.region_code),
            )
            .join(e, col(e.id) == col(a.evaluation_id))
            .join(i, col(i.id) == col(e.invitation_id))
            .where(col(a.id) > after)
            .order_by(col(a.id))
            .limit(self.batch_size)
        )
        out = []
        for r in await _rows(session, query):
            at = as_utc(r[3])
            if at > cutoff:
                break
            out.append((r[0], r[1], r[2] or "", at, r[4], r[5]))
        return out

    # --- rules ----------------------------------------------------------------------------------

    async def _burst(self, session: AsyncSession, rows: list[Rated], max_id: int) -> list[Finding]:
        """One number or chat rating many services in a short time (刷好评 from one phone)."""
        citizens = sorted({r.citizen_id for r in rows if r.citizen_id is not None})
        if not citizens:
            return []
        since = min(r.at for r in rows) - self.t.burst_window
        e, i = Evaluation, Invitation
        past: dict[int, list[Past]] = defaultdict(list)
        for chunk in _members(session, citizens):
            # Only numbers with enough services in the whole span can have enough in one window of it.
            enough = (
                select(col(e.citizen_id))
                .where(chunk(col(e.citizen_id)), col(e.created_at) >= since, col(e.id) <= max_id)
                .group_by(col(e.citizen_id))
                .having(func.count(distinct(col(e.invitation_id))) >= self.t.burst_count)
            )
            query = (
                select(col(e.id), col(e.citizen_id), col(e.created_at), col(i.region_code), col(e.invitation_id))
                .join(i, col(i.id) == col(e.invitation_id))
                .where(col(e.citizen_id).in_(enough), col(e.created_at) >= since, col(e.id) <= max_id)
            )
            for r in await _rows(session, query):
                past[r[1]].append(Past(id=r[0], key=r[1], at=as_utc(r[2]), region_code=r[3], invitation_id=r[4]))
        findings = []
        mine = _group(rows, lambda r: r.citizen_id, among=past)
        for citizen, entries in past.items():
            hit = _windows(
                entries,
                mine.get(citizen, []),
                self.t.burst_window,
                self.t.burst_count,
                distinct=lambda p: p.invitation_id,
            )
            if hit:
                findings.append(
                    Finding(
                        "burst",
                        f"citizen {citizen}",
                        {p.id for p in hit},
                        {p.region_code for p in hit},
                        {
                            "services": len({p.invitation_id for p in hit}),
                            "threshold": self.t.burst_count,
                            "window_minutes": self.t.burst_window.total_seconds() / 60,
                            "first_at": min(p.at for p in hit).isoformat(),
                            "last_at": max(p.at for p in hit).isoformat(),
                        },
                    )
                )
        return findings

    async def _staff_rater(self, session: AsyncSession, rows: list[Rated]) -> list[Finding]:
        """The rater's number is on a staff contact list: staff rating their own office's service."""
        hashes = sorted({r.phone_hash for r in rows if r.phone_hash})
        if not hashes:
            return []
        contacts: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
        sc, o = StaffContact, Organisation
        for chunk in _members(session, hashes):
            query = (
                select(col(sc.phone_hash), col(sc.org_id), col(sc.staff_id), col(o.region_code), col(o.code))
                .join(o, col(o.id) == col(sc.org_id))
                .where(chunk(col(sc.phone_hash)))
            )
            for row in await _rows(session, query):
                contacts[row[0]].append((row[1], row[2], row[3], row[4]))
        if not contacts:
            return []
        org_regions = await _org_regions(session, {r.org_id for r in rows if r.phone_hash in contacts})
        scope = self.t.staff_rater_scope
        by_citizen: dict[int | None, Finding] = {}
        for r in rows:
            for org_id, staff_id, region, code in contacts.get(r.phone_hash or "", ()):
                same_unit = org_id == r.org_id
                if scope == "unit" and not same_unit:
                    continue
                if scope == "region" and not same_unit and region != org_regions.get(r.org_id):
                    continue
                finding = by_citizen.get(r.citizen_id)
                if finding is None:
                    finding = by_citizen[r.citizen_id] = Finding(
                        "staff_rater", f"citizen {r.citizen_id}", set(), set(), {"scope": scope, "matches": []}
                    )
                if r.id not in finding.evaluation_ids:
                    finding.evaluation_ids.add(r.id)
                    finding.regions.add(r.region_code)
                    finding.evidence["matches"].append(
                        {"evaluation_id": r.id, "staff_org": code, "staff_id": staff_id, "same_unit": same_unit}
                    )
                break
        return list(by_citizen.values())

    async def _fast(self, session: AsyncSession, rows: list[Rated]) -> list[Finding]:
        """Rated within seconds of the page being shown or the prompt being sent: nobody read it."""
        prompts: dict[int, list[datetime]] = defaultdict(list)
        messaged = sorted({r.invitation_id for r in rows if r.channel in ("sms", "bot") and r.opened_at is None})
        m = OutboundMessage
        for chunk in _members(session, [f"prompt:{n}" for n in messaged]):
            query = select(col(m.invitation_id), col(m.sent_at), col(m.status), col(m.updated_at)).where(
                chunk(col(m.dedupe_key))
            )
            for invitation_id, sent_at, status, updated_at in await _rows(session, query):
                if sent_at is not None:
                    prompts[invitation_id].append(as_utc(sent_at))
                if status == "delivered" and updated_at is not None:
                    prompts[invitation_id].append(as_utc(updated_at))  # the delivery receipt's time
        findings = []
        limit = self.t.fast_seconds
        for r in rows:
            reference: datetime | None
            if r.opened_at is not None:
                reference, what = r.opened_at, "page_shown"
            else:
                # A delivery receipt may come after the answer: the latest time that is before the rating.
                before = [t for t in prompts.get(r.invitation_id, ()) if t <= r.at]
                reference, what = (max(before), "prompt_sent") if before else (None, "")
            if reference is None:
                continue
            seconds = (r.at - reference).total_seconds()
            if 0 <= seconds < limit:
                findings.append(
                    Finding(
                        "fast",
                        f"evaluation {r.id}",
                        {r.id},
                        {r.region_code},
                        {"seconds": round(seconds, 3), "after": what, "threshold_seconds": limit, "channel": r.channel},
                    )
                )
        return findings

    async def _devices(self, session: AsyncSession, rows: list[Rated], max_id: int) -> list[Finding]:
        """Many page ratings from one device cookie or one client address (a rating farm)."""
        findings = []
        s, e, i = RatingSignal, Evaluation, Invitation
        for rule, column, limit in (
            ("device", s.device_hash, self.t.device_count),
            ("address", s.address_hash, self.t.address_count),
        ):
            attr = "device_hash" if rule == "device" else "address_hash"
            keys = sorted({getattr(r, attr) for r in rows if getattr(r, attr)})
            if not keys:
                continue
            since = min(r.at for r in rows if getattr(r, attr)) - self.t.device_window
            past: dict[str, list[Past]] = defaultdict(list)
            for chunk in _members(session, keys):
                # Only keys with enough ratings in the whole span can have enough in one window of it.
                enough = (
                    select(col(column))
                    .where(chunk(col(column)), col(s.created_at) >= since, col(s.evaluation_id) <= max_id)
                    .group_by(col(column))
                    .having(func.count() >= limit)
                )
                query = (
                    select(
                        col(s.evaluation_id), col(column), col(s.created_at), col(i.region_code), col(e.invitation_id)
                    )
                    .join(e, col(e.id) == col(s.evaluation_id))
                    .join(i, col(i.id) == col(e.invitation_id))
                    .where(col(column).in_(enough), col(s.created_at) >= since, col(s.evaluation_id) <= max_id)
                )
                for r in await _rows(session, query):
                    past[r[1]].append(Past(id=r[0], key=r[1], at=as_utc(r[2]), region_code=r[3], invitation_id=r[4]))
            mine = _group(rows, lambda r: getattr(r, attr), among=past)  # noqa: B023 (used at once)
            for key, entries in past.items():
                hit = _windows(entries, mine.get(key, []), self.t.device_window, limit, distinct=lambda p: p.id)
                if hit:
                    findings.append(
                        Finding(
                            rule,
                            f"{rule} {key[:12]}",
                            {p.id for p in hit},
                            {p.region_code for p in hit},
                            {
                                "ratings": len(hit),
                                "threshold": limit,
                                "window_hours": self.t.device_window.total_seconds() / 3600,
                                "hash_prefix": key[:12],
                            },
                        )
                    )
        return findings

    async def _targeted(self, session: AsyncSession, rows: list[Rated], max_id: int) -> list[Finding]:
        """One number giving bad review after bad review to one staff member (a grudge, or pressure)."""
        bad = [r for r in rows if r.level in BAD_LEVELS and r.staff_id and r.citizen_id is not None]
        if not bad:
            return []
        citizens = sorted({r.citizen_id for r in bad if r.citizen_id is not None})
        since = min(r.at for r in bad) - self.t.targeted_window
        e, i = Evaluation, Invitation
        past: dict[tuple[int, int, str], list[Past]] = defaultdict(list)
        for chunk in _members(session, citizens):
            query = (
                select(
                    col(e.id),
                    col(e.citizen_id),
                    col(i.org_id),
                    col(e.staff_id),
                    col(e.created_at),
                    col(i.region_code),
                    col(e.invitation_id),
                )
                .join(i, col(i.id) == col(e.invitation_id))
                .where(
                    chunk(col(e.citizen_id)),
                    col(e.level).in_(BAD_LEVELS),
                    col(e.staff_id).is_not(None),
                    col(e.created_at) >= since,
                    col(e.id) <= max_id,
                )
            )
            for r in await _rows(session, query):
                key = (r[1], r[2], r[3])
                past[key].append(Past(id=r[0], key=key, at=as_utc(r[4]), region_code=r[5], invitation_id=r[6]))
        codes = await _org_codes(session, {k[1] for k in past})
        findings = []
        grouped = _group(bad, lambda r: (r.citizen_id, r.org_id, r.staff_id), among=past)
        for key, entries in past.items():
            hit = _windows(
                entries,
                grouped.get(key, []),
                self.t.targeted_window,
                self.t.targeted_count,
                distinct=lambda p: p.invitation_id,
            )
            if hit:
                citizen, org_id, staff = key
                findings.append(
                    Finding(
                        "targeted",
                        f"citizen {citizen} → staff {codes.get(org_id, org_id)}/{staff}",
                        {p.id for p in hit},
                        {p.region_code for p in hit},
                        {
                            "bad_reviews": len(hit),
                            "threshold": self.t.targeted_count,
                            "staff_id": staff,
                            "staff_org": codes.get(org_id),
                            "window_days": self.t.targeted_window.total_seconds() / 86400,
                        },
                    )
                )
        return findings

    async def _staff_share(self, session: AsyncSession, rows: list[Rated], max_id: int) -> list[Finding]:
        """A window staff member whose share of 5s stands far above their county's peers that month."""
        deltas: dict[tuple[int, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            if r.staff_id:
                key = (r.org_id, r.staff_id, r.region_code, self._period(r.at))
                deltas[key][0] += 1
                deltas[key][1] += r.level == 5
        if not deltas:
            return []
        table = StaffTally.__table__  # type: ignore[attr-defined]
        values = [
            {"org_id": k[0], "staff_id": k[1], "region_code": k[2], "period": k[3], "n": v[0], "n5": v[1]}
            for k, v in deltas.items()
        ]
        statement = dialect_insert(session, table)
        statement = statement.on_conflict_do_update(
            index_elements=["org_id", "staff_id", "period"],
            set_={"n": table.c.n + statement.excluded.n, "n5": table.c.n5 + statement.excluded.n5},
        )
        await _insert_rows(
            session,
            table,
            values,
            statement=statement,
            on_conflict=f"ON CONFLICT (org_id, staff_id, period) DO UPDATE SET n = {table.name}.n + excluded.n, "
            f"n5 = {table.name}.n5 + excluded.n5",
        )
        findings = []
        t = StaffTally
        for region, period in sorted({(k[2], k[3]) for k in deltas}):
            query = select(col(t.org_id), col(t.staff_id), col(t.n), col(t.n5)).where(
                col(t.region_code) == region, col(t.period) == period, col(t.n) >= self.t.share_min_sample
            )
            tallies = list(await _rows(session, query))
            if len(tallies) < self.t.share_min_peers:
                continue
            bounds = [wilson_lower(n5, n) for _, _, n, n5 in tallies]
            # A share's own sampling noise at the peers' typical share: sqrt(m (1 - m) / n).
            typical = statistics.median([n5 / n for _, _, n, n5 in tallies])
            scores = robust_z(bounds, [math.sqrt(typical * (1 - typical) / n) for _, _, n, _ in tallies])
            if scores is None:
                continue
            median = statistics.median(bounds)
            high = [
                (tally, bound, z)
                for tally, bound, z in zip(tallies, bounds, scores, strict=True)
                if z >= self.t.share_z
            ]
            if not high:
                continue
            codes = await _org_codes(session, {tally[0] for tally, _, _ in high})
            start, end = self._period_bounds(period)
            for (org_id, staff_id, n, n5), bound, z in high:
                subject = f"staff {codes.get(org_id, org_id)}/{staff_id} {period}"
                seen = await _rows(
                    session,
                    select(col(FraudFlag.id)).where(
                        col(FraudFlag.rule) == "staff_share", col(FraudFlag.subject) == subject
                    ),
                )
                if seen.first() is not None:
                    continue  # one flag per staff member and month
                e, i = Evaluation, Invitation
                ids = await _rows(
                    session,
                    select(col(e.id))
                    .join(i, col(i.id) == col(e.invitation_id))
                    .where(
                        col(i.org_id) == org_id,
                        col(e.staff_id) == staff_id,
                        col(e.level) == 5,
                        col(e.created_at) >= start,
                        col(e.created_at) < end,
                        col(e.id) <= max_id,
                    ),
                )
                findings.append(
                    Finding(
                        "staff_share",
                        subject,
                        set(ids.scalars().all()),
                        {region},
                        {
                            "staff_org": codes.get(org_id),
                            "staff_id": staff_id,
                            "period": period,
                            "ratings": n,
                            "fives": n5,
                            "share": round(n5 / n, 4),
                            "wilson_lower": round(bound, 4),
                            "peers_median": round(median, 4),
                            "robust_z": round(z, 2),
                            "threshold_z": self.t.share_z,
                            "peers": len(tallies),
                        },
                    )
                )
        return findings

    async def _near_duplicates(
        self, session: AsyncSession, rows: list[Rated], addenda: list[tuple[int, int, str, datetime, int | None, str]]
    ) -> list[Finding]:
        """The same text, give or take a few characters, from several numbers (a script or a template)."""
        items: list[tuple[int, int | None, str, datetime, frozenset[str]]] = []
        for evaluation_id, citizen_id, text, at, region in (
            *((r.id, r.citizen_id, r.content, r.at, r.region_code) for r in rows),
            *((a[1], a[4], a[2], a[3], a[5]) for a in addenda),
        ):
            normalised = texts.normalise(text)
            if len(normalised) >= self.t.text_min_chars:
                items.append((evaluation_id, citizen_id, region, at, texts.shingles(normalised)))
        if not items:
            return []
        keyed = [(item, texts.band_keys(item[4])) for item in items]
        all_keys = sorted({k for _, keys in keyed for k in keys})
        since = min(item[3] for item in items) - self.t.text_window
        b = TextBand
        candidates: dict[int, set[int]] = defaultdict(set)  # band key -> evaluation ids stored before
        citizens: dict[int, int | None] = {}
        for chunk in _members(session, all_keys):
            query = select(col(b.band_key), col(b.evaluation_id), col(b.citizen_id)).where(
                chunk(col(b.band_key)), col(b.created_at) >= since
            )
            for key, evaluation_id, citizen_id in await _rows(session, query):
                candidates[key].add(evaluation_id)
                citizens[evaluation_id] = citizen_id
        stored_ids = sorted({i for ids in candidates.values() for i in ids})
        stored_texts = await _texts_of(session, stored_ids)  # evaluation id -> (region, shingle sets)
        # Union-find over evaluation ids: an edge for each pair above the similarity threshold.
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        best: dict[int, float] = {}
        regions: dict[int, str] = {eid: region for eid, (region, _) in stored_texts.items()}
        sets: dict[int, list[frozenset[str]]] = {eid: list(s) for eid, (_, s) in stored_texts.items()}
        in_batch: dict[int, list[tuple[int, frozenset[str]]]] = defaultdict(list)
        new_ids: set[int] = set()
        for (evaluation_id, citizen_id, region, _at, pieces), keys in keyed:
            new_ids.add(evaluation_id)
            citizens[evaluation_id] = citizen_id
            regions[evaluation_id] = region
            find(evaluation_id)
            others: set[int] = set()
            for key in keys:
                others.update(candidates.get(key, ()))
                others.update(other for other, _ in in_batch.get(key, ()))
            for other in others - {evaluation_id}:
                score = max((texts.jaccard(pieces, s) for s in sets.get(other, ())), default=0.0)
                if score >= self.t.text_similarity:
                    parent[find(evaluation_id)] = find(other)
                    best[evaluation_id] = max(best.get(evaluation_id, 0.0), score)
            for key in keys:
                in_batch[key].append((evaluation_id, pieces))
            sets.setdefault(evaluation_id, []).append(pieces)
        await self._earlier_links(session, since, find, parent, new_ids, sets, citizens, regions)
        groups: dict[int, set[int]] = defaultdict(set)
        for evaluation_id in list(parent):
            groups[find(evaluation_id)].add(evaluation_id)
        findings = []
        for members in groups.values():
            if not members & new_ids or len(members) < 2:
                continue
            numbers = {citizens.get(m) if citizens.get(m) is not None else f"none-{m}" for m in members}
            if len(numbers) < self.t.text_numbers:
                continue
            first = min(members)
            sample = await _sample_text(session, first)
            findings.append(
                Finding(
                    "near_duplicate",
                    f"texts like evaluation {first}",
                    set(members),
                    {regions[m] for m in members if m in regions},
                    {
                        "numbers": len(numbers),
                        "threshold_numbers": self.t.text_numbers,
                        "similarity": self.t.text_similarity,
                        "sample": redact(sample[:80]),
                        "window_days": self.t.text_window.total_seconds() / 86400,
                    },
                )
            )
        bands = [
            {"band_key": key, "band": band, "evaluation_id": item[0], "citizen_id": item[1], "created_at": item[3]}
            for item, keys in keyed
            for band, key in enumerate(keys)
        ]
        await _insert_rows(session, TextBand.__table__, bands)  # type: ignore[attr-defined]
        return findings

    async def _earlier_links(
        self,
        session: AsyncSession,
        since: datetime,
        find: Any,
        parent: dict[int, int],
        new_ids: set[int],
        sets: dict[int, list[frozenset[str]]],
        citizens: dict[int, int | None],
        regions: dict[int, str],
    ) -> None:
        """Follow the earlier texts a new one matched to the texts they match in turn, so a group counts
        the same however passes cut it: a template and one copy in one pass, a second copy (like the
        template, less like the first copy) in the next, are three numbers. Only texts already linked to
        a new one are followed, so ordinary traffic, which links to nothing, costs nothing here."""
        b = TextBand
        expanded: set[int] = set()
        frontier = {x for x in parent if x not in new_ids}
        while frontier:
            expanded |= frontier
            keys_of = {f: {k for s in sets.get(f, ()) for k in texts.band_keys(s)} for f in sorted(frontier)}
            found: dict[int, set[int]] = defaultdict(set)  # band key -> evaluation ids
            for chunk in _members(session, sorted(set().union(*keys_of.values()))):
                query = select(col(b.band_key), col(b.evaluation_id), col(b.citizen_id)).where(
                    chunk(col(b.band_key)), col(b.created_at) >= since
                )
                for key, evaluation_id, citizen_id in await _rows(session, query):
                    found[key].add(evaluation_id)
                    citizens.setdefault(evaluation_id, citizen_id)
            unknown = sorted({i for ids in found.values() for i in ids} - sets.keys())
            for evaluation_id, (region, pieces) in (await _texts_of(session, unknown)).items():
                regions[evaluation_id], sets[evaluation_id] = region, pieces
            reached: set[int] = set()
            for f, keys in keys_of.items():
                for other in sorted({i for k in keys for i in found.get(k, ())} - {f}):
                    if other in parent and find(other) == find(f):
                        continue
                    score = max(
                        (texts.jaccard(mine, theirs) for mine in sets.get(f, ()) for theirs in sets.get(other, ())),
                        default=0.0,
                    )
                    if score >= self.t.text_similarity:
                        parent[find(f)] = find(other)
                        if other not in expanded and other not in new_ids:
                            reached.add(other)
            frontier = reached

    # --- writing --------------------------------------------------------------------------------

    async def _write(self, session: AsyncSession, findings: list[Finding], at: datetime) -> int:
        """Store each finding as a flag with the evaluations no earlier flag of its rule holds."""
        if not findings:
            return 0
        taken: dict[str, set[int]] = defaultdict(set)
        for rule in {f.rule for f in findings}:
            ids = sorted({i for f in findings if f.rule == rule for i in f.evaluation_ids})
            for chunk in _members(session, ids):
                query = select(col(FlagEvaluation.evaluation_id)).where(
                    col(FlagEvaluation.rule) == rule, chunk(col(FlagEvaluation.evaluation_id))
                )
                taken[rule].update((await _rows(session, query)).scalars().all())
        written = 0
        for finding in findings:
            fresh = sorted(finding.evaluation_ids - taken[finding.rule])
            if not fresh:
                continue
            taken[finding.rule].update(fresh)
            evidence = {**finding.evidence, "evaluation_ids": sorted(finding.evaluation_ids)[:200]}
            flag = FraudFlag(
                rule=finding.rule,
                subject=finding.subject[:128],
                region_code=common_region(finding.regions),
                evidence=evidence,
                evaluation_count=len(fresh),
                created_at=at,
            )
            session.add(flag)
            await session.flush()
            links = [{"flag_id": flag.id, "evaluation_id": i, "rule": finding.rule} for i in fresh]
            await _insert_rows(session, FlagEvaluation.__table__, links)  # type: ignore[attr-defined]
            written += 1
        return written

    def _period(self, at: datetime) -> str:
        # Ratings come in time order: the last month's bounds answer almost every call without a conversion.
        cached = self._last_period
        if cached is not None and cached[0] <= at < cached[1]:
            return cached[2]
        period = at.astimezone(self._tz).strftime("%Y-%m")
        start, end = self._period_bounds(period)
        self._last_period = (start, end, period)
        return period

    def _period_bounds(self, period: str) -> tuple[datetime, datetime]:
        year, month = (int(p) for p in period.split("-"))
        start = datetime(year, month, 1, tzinfo=self._tz)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=self._tz)
        return start, end


async def _rows(session: AsyncSession, query: Select[*tuple[Any, ...]]) -> Result[*tuple[Any, ...]]:
    """Run a SQLAlchemy select of columns on the session's connection: plain rows, without the ORM's result
    machinery (which costs more than the query when thousands of rows come back)."""
    connection = await session.connection()
    return await connection.execute(query)


async def _insert_rows(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]], *, statement: Any = None, on_conflict: str = ""
) -> None:
    """Insert many rows with one statement. On PostgreSQL: one INSERT … SELECT FROM unnest(arrays), a
    parameter per column whatever the number of rows (executemany would bind and send every row apart);
    `on_conflict` is its ON CONFLICT clause. Elsewhere: `statement` (an INSERT of the table by default,
    with the same conflict handling) by executemany."""
    if not rows:
        return
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        columns = list(rows[0])
        casts = ", ".join(
            f"CAST(:{name} AS {table.c[name].type.compile(dialect=connection.dialect)}[])" for name in columns
        )
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({casts}) {on_conflict}"
        await connection.execute(sql_text(sql), {name: [row[name] for row in rows] for name in columns})
        return
    await connection.execute(statement if statement is not None else insert(table), rows)


def _group(rows: list[Rated], key: Any, *, among: Container[Any]) -> dict[Any, list[Rated]]:
    """The rows by key, for the keys `among` holds (those the past has enough of: most keys have not)."""
    grouped: dict[Any, list[Rated]] = defaultdict(list)
    for r in rows:
        k = key(r)
        if k in among:
            grouped[k].append(r)
    return grouped


def _windows(entries: list[Past], new: list[Rated], window: timedelta, threshold: int, *, distinct: Any) -> list[Past]:
    """The entries of every window of length `window` ending at one of the new ratings that holds at least
    `threshold` distinct items (services, ratings)."""
    if len(entries) < threshold or not new:
        return []
    ordered = sorted(entries, key=lambda p: (p.at, p.id))
    times = [p.at for p in ordered]
    hit: dict[int, Past] = {}
    for rating in new:
        inside = ordered[bisect_left(times, rating.at - window) : bisect_right(times, rating.at)]
        if len(inside) >= threshold and len({distinct(p) for p in inside}) >= threshold:
            hit.update((p.id, p) for p in inside)
    return list(hit.values())


async def _lock_cursor(session: AsyncSession, name: str, at: datetime) -> FraudCursor:
    await insert_if_absent(session, FraudCursor, name=name, last_id=0, updated_at=at)
    query = (
        sqlmodel_select(FraudCursor)
        .where(FraudCursor.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).one()


async def _org_regions(session: AsyncSession, org_ids: set[int]) -> dict[int, str]:
    if not org_ids:
        return {}
    rows = await _rows(
        session,
        select(col(Organisation.id), col(Organisation.region_code)).where(col(Organisation.id).in_(sorted(org_ids))),
    )
    return {r[0]: r[1] for r in rows}


async def _org_codes(session: AsyncSession, org_ids: set[int]) -> dict[int, str]:
    if not org_ids:
        return {}
    rows = await _rows(
        session, select(col(Organisation.id), col(Organisation.code)).where(col(Organisation.id).in_(sorted(org_ids)))
    )
    return {r[0]: r[1] for r in rows}


async def _texts_of(session: AsyncSession, evaluation_ids: list[int]) -> dict[int, tuple[str, list[frozenset[str]]]]:
    """The shingle sets of the evaluations' own texts and of their addenda, with the region."""
    out: dict[int, tuple[str, list[frozenset[str]]]] = {}
    e, i, a = Evaluation, Invitation, EvaluationAddendum
    for chunk in _members(session, evaluation_ids):
        rows = await _rows(
            session,
            select(col(e.id), col(e.content), col(i.region_code))
            .join(i, col(i.id) == col(e.invitation_id))
            .where(chunk(col(e.id))),
        )
        for evaluation_id, content, region in rows:
            out[evaluation_id] = (region, [texts.shingles(texts.normalise(content or ""))])
        extra = await _rows(
            session,
            select(col(a.evaluation_id), col(a.content)).where(chunk(col(a.evaluation_id)), col(a.content) != ""),
        )
        for evaluation_id, content in extra:
            if evaluation_id in out:
                out[evaluation_id][1].append(texts.shingles(texts.normalise(content)))
    return out


async def _sample_text(session: AsyncSession, evaluation_id: int) -> str:
    content = (
        await _rows(session, select(col(Evaluation.content)).where(col(Evaluation.id) == evaluation_id))
    ).scalars().first() or ""
    if texts.normalise(content):
        return content
    extra = await _rows(
        session,
        select(col(EvaluationAddendum.content)).where(
            col(EvaluationAddendum.evaluation_id) == evaluation_id, col(EvaluationAddendum.content) != ""
        ),
    )
    return extra.scalars().first() or ""


__all__ = ["Detector", "PassResult", "RULES", "Thresholds", "common_region", "robust_z", "wilson_lower"]
