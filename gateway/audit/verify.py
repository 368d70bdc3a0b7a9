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

from sqlalchemy import and_, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.log import FIELDS, GENESIS, HEAD, LOG, PUBLISHED, TABLES, Head, entry_document, fast_canonical, record_of
from gateway.clock import as_utc

PAGE_SIZE = 5000


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
        return f"evaluation log intact: {self.records} records checked, {head}, {self.published} published heads match"


def _joined_page_query() -> Any:
    # Each entry with the columns of its source row (at most one of the three joins matches).
    columns = [LOG.c.seq, LOG.c.kind, LOG.c.record_id, LOG.c.record, LOG.c.prev_hash, LOG.c.hash]
    source = LOG
    for kind, table in TABLES.items():
        source = source.outerjoin(table, and_(LOG.c.kind == kind, table.c.id == LOG.c.record_id))
        columns += [table.c[name].label(f"{kind}_{name}") for name in FIELDS[kind]]
    return select(*columns).select_from(source)


def _diff(kind: str, logged_text: str, stored: dict[str, Any]) -> str:
    try:
        logged = json.loads(logged_text).get("record", {})
    except ValueError:
        return "its logged text is not JSON"
    changed = [f"{name}: logged {logged.get(name)!r}, stored {stored.get(name)!r}"
               for name in FIELDS[kind] if logged.get(name) != stored.get(name)]
    return "; ".join(changed) or "the logged text is not the canonical form of the stored row"


async def verify(engine: AsyncEngine, *, page_size: int = PAGE_SIZE) -> Verified:
    """Check the whole log; read-only."""
    async with engine.connect() as conn:
        return await _verify(conn, page_size)


async def _verify(conn: AsyncConnection, page_size: int) -> Verified:
    query = _joined_page_query()
    offsets: dict[str, int] = {}
    position = 6
    for kind in TABLES:
        offsets[kind] = position
        position += len(FIELDS[kind])
    seq, prev, published = 0, GENESIS, 0

    def broken(problem: str, at_seq: int | None) -> Verified:
        return Verified(records=seq, head=Head(seq, prev) if seq else None, published=published,
                        problem=problem, seq=at_seq)

    while True:
        page_start = seq
        rows = (await conn.execute(query.where(LOG.c.seq > seq).order_by(LOG.c.seq).limit(page_size))).all()
        if not rows:
            break
        for row in rows:
            entry_seq, kind, record_id, text, prev_hash, digest = row[0:6]
            if entry_seq != seq + 1:
                return broken(f"missing from the log (the next entry is seq {entry_seq}): an entry was deleted", seq + 1)
            if prev_hash != prev:
                return broken("its prev_hash does not link to the entry before it", entry_seq)
            recomputed = hashlib.sha256(bytes.fromhex(prev) + text.encode("utf-8")).hexdigest()
            if recomputed != digest:
                return broken(f"{kind} #{record_id}: the logged record does not hash to its stored hash "
                              "(the entry was altered)", entry_seq)
            fields = FIELDS.get(kind)
            if fields is None:
                return broken(f"unknown kind {kind!r}", entry_seq)
            start = offsets[kind]
            values = row[start:start + len(fields)]
            if values[0] is None:
                return broken(f"{kind} #{record_id} is no longer in the database (deleted)", entry_seq)
            stored = record_of(kind, dict(zip(fields, values)))
            if fast_canonical(entry_document(entry_seq, kind, stored)) != text:
                return broken(f"{kind} #{record_id} differs from its logged record: {_diff(kind, text, stored)}",
                              entry_seq)
            seq, prev = entry_seq, recomputed
        matched, problem = await _check_published(conn, page_start, seq, rows)
        if problem is not None:
            return broken(problem[1], problem[0])
        published += matched
    beyond = (await conn.execute(
        select(PUBLISHED.c.seq, PUBLISHED.c.place, PUBLISHED.c.published_at)
        .where(PUBLISHED.c.seq > seq).order_by(PUBLISHED.c.seq).limit(1)
    )).first()
    if beyond is not None:
        return broken(f"published head seq {beyond.seq} ({beyond.place}, {as_utc(beyond.published_at):%Y-%m-%d %H:%M}Z) "
                      f"is beyond the log's end at seq {seq}: entries were removed", beyond.seq)
    head_row = (await conn.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()
    if head_row is not None and (head_row.seq, head_row.hash) != (seq, prev):
        return broken(f"the head row says seq {head_row.seq} but the log ends at seq {seq} with another hash",
                      head_row.seq if head_row.seq > seq else seq)
    for kind, table in TABLES.items():
        missing = (await conn.execute(
            select(table.c.id).where(~exists().where(LOG.c.kind == kind, LOG.c.record_id == table.c.id))
            .order_by(table.c.id).limit(1)
        )).first()
        if missing is not None:
            return broken(f"{kind} #{missing.id} is in the database but not in the log", None)
    return Verified(records=seq, head=Head(seq, prev) if seq else None, published=published)


async def _check_published(
    conn: AsyncConnection, after: int, upto: int, rows: Any
) -> tuple[int, tuple[int, str] | None]:
    # The chain up to `upto` is verified: a published head must carry the hash recomputed at its seq.
    heads = (await conn.execute(
        select(PUBLISHED.c.seq, PUBLISHED.c.hash, PUBLISHED.c.place, PUBLISHED.c.published_at)
        .where(PUBLISHED.c.seq > after, PUBLISHED.c.seq <= upto).order_by(PUBLISHED.c.seq)
    )).all()
    for head in heads:
        chained = rows[head.seq - after - 1][5]
        if chained != head.hash:
            return 0, (head.seq, (
                f"the head published at {head.place} on {as_utc(head.published_at):%Y-%m-%d %H:%M}Z "
                f"(sha256 {head.hash}) differs from the log's hash at this seq: history was rewritten at or "
                "before it"
            ))
    return len(heads), None

