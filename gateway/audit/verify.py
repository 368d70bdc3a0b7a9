"""`gateway audit verify`: recompute the evaluation log and check it against its records and the
heads that were published.

The log is read in keyset pages of `page_size` entries (constant memory), each entry joined with
the row it came from. For every entry, in order: its seq follows the one before; its prev_hash is the
hash recomputed so far; its hash is sha256(prev_hash ‖ its stored text); the stored text is exactly
the canonical JSON rebuilt from the source row today. Then: every published head equals the chain
at its seq; the head row equals the chain's end; no evaluation record is missing from the log.
The first thing that does not match is reported, naming its seq.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.log import (
    FIELDS,
    GENESIS,
    HEAD,
    LOG,
    PUBLISHED,
    TABLES,
    Head,
    entry_document,
    fast_canonical,
    record_of,
)
from gateway.clock import as_utc

PAGE_SIZE = 100_000  # entries per range (PostgreSQL) or page (SQLite); the command line's default
JOBS = 2  # PostgreSQL connections checking ranges side by side
PAGE_SIZE_NAMING = 5000  # entries per page of the reference check (SQLite, and naming a problem)


@dataclass(frozen=True)
class Verified:
    """The outcome: `problem` is None when the log is intact."""

    records: int
    head: Head | None
    published: int
    problem: str | None = None
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            where = f"seq {self.seq}: " if self.seq is not None else ""
            return f"evaluation log NOT intact: {where}{self.problem} ({self.records} records checked before it)"
        head = f"head seq {self.head.seq} sha256 {self.head.hash}" if self.head else "log empty"
        return f"evaluation log intact: {self.records} records checked, {head}, {self.published} published heads agree"


def _joined_page_query() -> Any:
    # Each entry with the columns of its source row (at most one of the three joins matches).
    columns: list[Any] = [LOG.c.seq, LOG.c.kind, LOG.c.record_id, LOG.c.record, LOG.c.prev_hash, LOG.c.hash]
    source: Any = LOG
    for kind, table in TABLES.items():
        source = source.outerjoin(table, and_(LOG.c.kind == kind, table.c.id == LOG.c.record_id))
        columns += [table.c[name].label(f"{kind}_{name}") for name in FIELDS[kind]]
    return select(*columns).select_from(source)


def _diff(kind: str, logged_text: str, stored: dict[str, Any]) -> str:
    try:
        logged = json.loads(logged_text).get("record", {})
    except ValueError:
        return "its logged text is not JSON"
    changed = [
        f"{name}: logged {logged.get(name)!r}, stored {stored.get(name)!r}"
        for name in FIELDS[kind]
        if logged.get(name) != stored.get(name)
    ]
    return "; ".join(changed) or "the logged text is not the canonical form of the stored row"


async def verify(engine: AsyncEngine, *, page_size: int = PAGE_SIZE, jobs: int = JOBS) -> Verified:
    """Check the whole log, in one read-only snapshot (appends may go on meanwhile).

    On PostgreSQL `jobs` connections check ranges of `page_size` entries side by side, all in the one
    snapshot; on SQLite the entries are checked one page after the other.
    """
    if page_size < 1 or jobs < 1:
        raise ValueError("page_size and jobs must be at least 1")
    async with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            async with conn.begin():
                # Pages come back whole to Python: at most PAGE_SIZE_NAMING entries at a time.
                return await _verify(conn, _python_pages(conn, min(page_size, PAGE_SIZE_NAMING)))
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            snapshot = (await conn.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one()
            async with AsyncExitStack() as stack:
                workers = [await stack.enter_async_context(_in_snapshot(engine, snapshot)) for _ in range(jobs)]
                return await _verify(conn, _sql_pages(conn, workers, page_size))


@asynccontextmanager
async def _in_snapshot(engine: AsyncEngine, snapshot: str) -> AsyncIterator[AsyncConnection]:
    """A further connection reading the same snapshot as the verifier's own."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            for setting in _SQL_SETTINGS:
                await conn.exec_driver_sql(setting)
            yield conn


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9A-F]+)?")


@dataclass(frozen=True)
class _Page:
    """A checked page: how far it got, and the first problem (seq, what) if any."""

    last_seq: int
    last_hash: str
    problem: tuple[int, str] | None = None


async def _verify(conn: AsyncConnection, pages: AsyncGenerator[_Page, None]) -> Verified:
    seq, prev, published = 0, GENESIS, 0

    def broken(problem: str, at_seq: int | None) -> Verified:
        return Verified(
            records=seq, head=Head(seq, prev) if seq else None, published=published, problem=problem, seq=at_seq
        )

    async with aclosing(pages):
        async for page in pages:
            if page.problem is not None:
                seq, prev = page.last_seq, page.last_hash
                return broken(page.problem[1], page.problem[0])
            matched, problem = await _check_published(conn, seq, page.last_seq)
            seq, prev, published = page.last_seq, page.last_hash, published + matched
            if problem is not None:
                return broken(problem[1], problem[0])
    beyond = (
        await conn.execute(
            select(PUBLISHED.c.seq, PUBLISHED.c.place, PUBLISHED.c.published_at)
            .where(PUBLISHED.c.seq > seq)
            .order_by(PUBLISHED.c.seq)
            .limit(1)
        )
    ).first()
    if beyond is not None:
        return broken(
            f"published head seq {beyond.seq} ({beyond.place}, {as_utc(beyond.published_at):%Y-%m-%d %H:%M}Z) "
            f"is beyond the log's end at seq {seq}: entries were removed",
            beyond.seq,
        )
    head_row = (await conn.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()
    if head_row is not None and (head_row.seq, head_row.hash) != (seq, prev):
        return broken(
            f"the head row says seq {head_row.seq} but the log ends at seq {seq} with another hash",
            head_row.seq if head_row.seq > seq else seq,
        )
    for kind, table in TABLES.items():
        missing = (
            await conn.execute(
                select(table.c.id)
                .where(~exists().where(LOG.c.kind == kind, LOG.c.record_id == table.c.id))
                .order_by(table.c.id)
                .limit(1)
            )
        ).first()
        if missing is not None:
            return broken(f"{kind} #{missing.id} is in the database but not in the log", None)
    return Verified(records=seq, head=Head(seq, prev) if seq else None, published=published)


_OFFSETS: dict[str, int] = {}
_position = 6
for _kind in TABLES:
    _OFFSETS[_kind] = _position
    _position += len(FIELDS[_kind])
_JOINED = _joined_page_query()


async def _python_pages(conn: AsyncConnection, page_size: int) -> AsyncGenerator[_Page, None]:
    seq, prev = 0, GENESIS
    while (page := await _python_page(conn, seq, prev, page_size)) is not None:
        yield page
        if page.problem is not None:
            return
        seq, prev = page.last_seq, page.last_hash


async def _sql_pages(conn: AsyncConnection, workers: list[AsyncConnection], size: int) -> AsyncGenerator[_Page, None]:
    """The log's ranges of `size` entries, checked by PostgreSQL on the workers' connections side by side
    and handed on in order. A range that fails is gone through again by the reference check, which
    names its first problem."""
    end = (await conn.execute(select(func.max(LOG.c.seq)))).scalar() or 0
    free: asyncio.Queue[AsyncConnection] = asyncio.Queue()
    for worker in workers:
        free.put_nowait(worker)

    async def check(after: int, upto: int) -> _Range:
        worker = await free.get()
        try:
            return await _sql_range(worker, after, upto, GENESIS if after == 0 else None)
        finally:
            free.put_nowait(worker)

    bounds = ((after, min(after + size, end)) for after in range(0, end, size))
    running: deque[tuple[int, int, asyncio.Task[_Range]]] = deque()

    def fill() -> None:
        while len(running) <= len(workers):  # one range queued behind the running ones
            nxt = next(bounds, None)
            if nxt is None:
                return
            running.append((*nxt, asyncio.create_task(check(*nxt))))

    seq, prev = 0, GENESIS
    try:
        fill()
        while running:
            after, upto, task = running.popleft()
            found = await task
            fill()
            if found.bad is None and found.count == upto - after and found.last_hash is not None:
                seq, prev = upto, found.last_hash
                yield _Page(seq, prev)
                continue
            yield await _name_problem(conn, seq, prev, upto, found.bad)
            return
    finally:  # a problem ends the run: let the ranges already sent finish, their connections are in use
        await asyncio.gather(*(task for _, _, task in running), return_exceptions=True)


async def _name_problem(conn: AsyncConnection, seq: int, prev: str, upto: int, bad: int | None) -> _Page:
    """The reference check over a range PostgreSQL found wrong, from its verified start."""
    while True:
        page = await _python_page(conn, seq, prev, max(1, min(PAGE_SIZE_NAMING, upto - seq)))
        if page is None:
            break
        if page.problem is not None:
            return page
        seq, prev = page.last_seq, page.last_hash
        if seq > upto:
            break
    return _Page(seq, prev, (bad if bad is not None else seq + 1, "the entry does not match (PostgreSQL's check)"))


async def _python_page(conn: AsyncConnection, seq: int, prev: str, page_size: int) -> _Page | None:
    """The reference check, entry by entry in Python (SQLite, and PostgreSQL's detailed messages)."""
    rows = (await conn.execute(_JOINED.where(LOG.c.seq > seq).order_by(LOG.c.seq).limit(page_size))).all()
    if not rows:
        return None
    for row in rows:
        problem = _check_entry(row, seq, prev)
        if problem is not None:
            return _Page(seq, prev, problem)
        seq, prev = row[0], row[5]
    return _Page(seq, prev)


def _check_entry(row: Any, seq: int, prev: str) -> tuple[int, str] | None:
    entry_seq, kind, record_id, text, prev_hash, digest = row[0:6]
    if entry_seq != seq + 1:
        return seq + 1, f"missing from the log (the next entry is seq {entry_seq}): an entry was deleted"
    if prev_hash != prev:
        return entry_seq, "its prev_hash does not link to the entry before it"
    if hashlib.sha256(bytes.fromhex(prev) + text.encode("utf-8")).hexdigest() != digest:
        return (
            entry_seq,
            f"{kind} #{record_id}: the logged record does not hash to its stored hash (the entry was altered)",
        )
    fields = FIELDS.get(kind)
    if fields is None:
        return entry_seq, f"unknown kind {kind!r}"
    start = _OFFSETS[kind]
    values = row[start : start + len(fields)]
    if values[0] is None:
        return entry_seq, f"{kind} #{record_id} is no longer in the database (deleted)"
    stored = record_of(kind, dict(zip(fields, values)))
    if fast_canonical(entry_document(entry_seq, kind, stored)) != text:
        return entry_seq, f"{kind} #{record_id} differs from its logged record: {_diff(kind, text, stored)}"
    return None


def _sql_text(kind: str, alias: str) -> str:
    """PostgreSQL expression rebuilding an entry's canonical JSON from its source row: the same text as
    `fast_canonical(entry_document(...))` (keys sorted, to_json's string escapes are RFC 8785's, times
    rendered in UTC explicitly). One `concat()` call, not a chain of `||`: it builds the text once.
    Tests hold the two to each other on every database run."""
    table = TABLES[kind]
    parts = [f"""'{{"kind":"{kind}","record":'"""]
    separator = "{"
    for name in sorted(FIELDS[kind]):
        column, ref = table.c[name], f'{alias}."{name}"'
        if isinstance(column.type, DateTime):
            value = f"""'"' || to_char({ref} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'"""
        elif isinstance(column.type, JSON):  # a list of integers, kept as written: drop the spaces
            value = f"translate({ref}::text, E' \\n\\r\\t', '')"
        elif isinstance(column.type, Integer):
            value = f"{ref}::text"
        else:
            value = f"to_json({ref})::text"
        # concat() skips a NULL: a missing value is written out, and a deleted row never matches.
        parts += [f"""'{separator}"{name}":'""", f"coalesce({value}, 'null')"]
        separator = ","
    parts += ["""'},"seq":'""", "l.seq", "'}'"]
    return f"concat({', '.join(parts)})"


def _sql_range_query() -> str:
    """One range (a, b] of the log, checked set-based: the entries in seq order with the one before
    each (a window over the primary key's order, the anchor entry a included), each joined with its
    source row by primary key. Only the first failing seq, the count and the hash at b come back."""
    joins = " ".join(
        f"LEFT JOIN {table.name} s_{kind} ON l.kind = '{kind}' AND s_{kind}.id = l.record_id"
        for kind, table in TABLES.items()
    )
    rebuilt = " ".join(f"WHEN '{kind}' THEN {_sql_text(kind, f's_{kind}')}" for kind in TABLES)
    return f"""
        SELECT min(l.seq) FILTER (WHERE
                   l.seq <> coalesce(l.before_seq, $1) + 1
                   OR l.prev_hash IS DISTINCT FROM coalesce(l.before_hash, $3)
                   OR sha256(decode(l.prev_hash, 'hex') || convert_to(l.record, 'UTF8')) <> decode(l.hash, 'hex')
                   OR (CASE l.kind {rebuilt} END) IS DISTINCT FROM l.record) AS bad,
               count(*) AS n,
               (SELECT hash FROM evaluation_log WHERE seq = $2) AS last_hash
        FROM (
            SELECT seq, kind, record_id, record, prev_hash, hash,
                   lag(seq) OVER w AS before_seq, lag(hash) OVER w AS before_hash
            FROM evaluation_log WHERE seq >= $1 AND seq <= $2 WINDOW w AS (ORDER BY seq)
        ) l {joins}
        WHERE l.seq > $1
    """


_SQL_RANGE = _sql_range_query()
# The plan this query is written for: the log's primary key in order, one index probe per entry into its
# source table (a hash join would read a whole source table for every range), no parallel workers (the
# verifier runs its own connections in parallel over disjoint ranges).
_SQL_SETTINGS = (
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL max_parallel_workers_per_gather = 0",
    "SET LOCAL jit = off",
)


@dataclass(frozen=True)
class _Range:
    """What PostgreSQL found in a range (a, b]: the first failing seq, how many entries, the hash at b."""

    bad: int | None
    count: int
    last_hash: str | None


async def _sql_range(conn: AsyncConnection, after: int, upto: int, anchor: str | None) -> _Range:
    raw = await conn.get_raw_connection()
    row = await raw.driver_connection.fetchrow(_SQL_RANGE, after, upto, anchor)  # type: ignore[union-attr]
    return _Range(row["bad"], row["n"], row["last_hash"])


async def _check_published(conn: AsyncConnection, after: int, upto: int) -> tuple[int, tuple[int, str] | None]:
    # Entries after..upto are verified, so their stored hashes are the recomputed chain.
    heads = (
        await conn.execute(
            select(
                PUBLISHED.c.seq,
                PUBLISHED.c.hash,
                PUBLISHED.c.place,
                PUBLISHED.c.published_at,
                LOG.c.hash.label("chained"),
            )
            .select_from(PUBLISHED.join(LOG, LOG.c.seq == PUBLISHED.c.seq))
            .where(PUBLISHED.c.seq > after, PUBLISHED.c.seq <= upto)
            .order_by(PUBLISHED.c.seq)
        )
    ).all()
    for head in heads:
        if head.chained != head.hash:
            return 0, (
                head.seq,
                (
                    f"the head published at {head.place} on {as_utc(head.published_at):%Y-%m-%d %H:%M}Z "
                    f"(sha256 {head.hash}) differs from the log's hash at this seq: history was rewritten at or "
                    "before it"
                ),
            )
    return len(heads), None
