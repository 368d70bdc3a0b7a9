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

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, and_, exists, select
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

PAGE_SIZE = 5000  # also the command line's default (gateway.audit.cli)


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


async def verify(engine: AsyncEngine, *, page_size: int = PAGE_SIZE) -> Verified:
    """Check the whole log, in one read-only snapshot (appends may go on meanwhile)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await _verify(conn, page_size)


@dataclass(frozen=True)
class _Page:
    """A checked page: how far it got, and the first problem (seq, what) if any."""

    last_seq: int
    last_hash: str
    problem: tuple[int, str] | None = None


async def _verify(conn: AsyncConnection, page_size: int) -> Verified:
    check = _sql_page if conn.dialect.name == "postgresql" else _python_page
    seq, prev, published = 0, GENESIS, 0

    def broken(problem: str, at_seq: int | None) -> Verified:
        return Verified(
            records=seq, head=Head(seq, prev) if seq else None, published=published, problem=problem, seq=at_seq
        )

    while True:
        page = await check(conn, seq, prev, page_size)
        if page is None:
            break
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
    rendered in UTC explicitly). Tests hold the two to each other on every database run."""
    table = TABLES[kind]
    parts = []
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
        parts.append(f"""'"{name}":' || coalesce({value}, 'null')""")
    record = " || ',' || ".join(parts)
    return f"""'{{"kind":"{kind}","record":{{' || {record} || '}},"seq":' || p.seq || '}}'"""


def _sql_page_query() -> str:
    rebuilt = " ".join(
        f"WHEN '{kind}' THEN (SELECT {_sql_text(kind, 's')} FROM {TABLES[kind].name} s WHERE s.id = p.record_id)"
        for kind in TABLES
    )
    return f"""
        WITH page AS (
            SELECT seq, kind, record_id, record, prev_hash, hash FROM evaluation_log
            WHERE seq > $1 ORDER BY seq LIMIT $3
        ), checked AS (
            SELECT p.seq, p.prev_hash, p.hash,
                   p.seq = coalesce(lag(p.seq) OVER w, $1) + 1 AS seq_ok,
                   p.prev_hash = coalesce(lag(p.hash) OVER w, $2) AS link_ok,
                   encode(sha256(decode(p.prev_hash, 'hex') || convert_to(p.record, 'UTF8')), 'hex') = p.hash
                       AS hash_ok,
                   (CASE p.kind {rebuilt} END) IS NOT DISTINCT FROM p.record AS source_ok,
                   max(p.seq) OVER () AS last_seq
            FROM page p WINDOW w AS (ORDER BY p.seq)
        )
        SELECT seq, hash, seq_ok AND link_ok AND hash_ok AND source_ok AS ok FROM checked
        WHERE NOT (seq_ok AND link_ok AND hash_ok AND source_ok) OR seq = last_seq
        ORDER BY seq LIMIT 1
    """


_SQL_PAGE = _sql_page_query()


async def _sql_page(conn: AsyncConnection, seq: int, prev: str, page_size: int) -> _Page | None:
    """The same checks, set-based inside PostgreSQL: only the page's end or its first problem comes back."""
    raw = await conn.get_raw_connection()
    row = await raw.driver_connection.fetchrow(_SQL_PAGE, seq, prev, page_size)  # type: ignore[union-attr]
    if row is None:
        return None
    if row["ok"]:
        return _Page(row["seq"], row["hash"])
    # Name the problem with the reference check, from the entry before the first bad one.
    before = (
        await conn.execute(
            select(LOG.c.seq, LOG.c.hash).where(LOG.c.seq < row["seq"]).order_by(LOG.c.seq.desc()).limit(1)
        )
    ).first()
    if before is not None and before.seq > seq:
        seq, prev = before.seq, before.hash
    page = await _python_page(conn, seq, prev, 1)
    if page is None or page.problem is None:
        return _Page(seq, prev, (row["seq"], "the entry does not match (PostgreSQL's check)"))
    return page


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
