"""The tamper-evident evaluation log (Art. 19 "自动生成、不可更改").

Every evaluation, addendum and decision is appended, in the transaction that wrote it, as entry `seq`
(1, 2, 3 … without gaps) whose `hash = sha256(prev_hash ‖ canonical JSON of the entry)`. The entry
holds the record's values as flushed to the database (explicit fields, times rendered as UTC strings
here, never by the database session's time zone); where the flushed object cannot be trusted to be
what is stored, the row is read back. `gateway audit verify` rebuilds the text from the stored row.

Appends are serialised by the one-row head table, locked FOR UPDATE. The lock is taken at commit
time (a `before_commit` hook runs the append), not when the record is written, so it is held only
for the append and the commit itself, not for the rest of the writer's transaction. On PostgreSQL
the append is one statement, `evaluation_log_append()` (migration a1f0c3e5b101).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import rfc8785
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Table,
    TypeDecorator,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.models import EvaluationLogEntry, EvaluationLogHead, PublishedHead
from gateway.clock import as_utc
from gateway.store.models import Evaluation, EvaluationAddendum, EvaluationDecision
from gateway.store.upsert import insert_if_absent

log = logging.getLogger(__name__)

GENESIS = "0" * 64  # prev_hash of entry 1: 32 zero bytes

# The fields of each kind that are hashed, by name: explicit, so a column added later does not
# change how older entries are rebuilt. A new field is a new, documented version of the entry.
FIELDS: dict[str, tuple[str, ...]] = {
    "evaluation": (
        "id",
        "invitation_id",
        "case_id",
        "scope",
        "citizen_id",
        "level",
        "reason_codes",
        "content",
        "staff_id",
        "staff_level",
        "channel",
        "submitted_by_org_id",
        "created_at",
    ),
    "addendum": ("id", "evaluation_id", "kind", "reason_codes", "content", "staff_level", "channel", "created_at"),
    "decision": ("id", "evaluation_id", "ticket_id", "decision", "org_id", "note", "created_at"),
}
TABLES: dict[str, Table] = {
    "evaluation": Evaluation.__table__,  # type: ignore[attr-defined]
    "addendum": EvaluationAddendum.__table__,  # type: ignore[attr-defined]
    "decision": EvaluationDecision.__table__,  # type: ignore[attr-defined]
}
# The order of kinds when several records share a time (the back-fill): a rating before what follows it.
KIND_ORDER = {"evaluation": 0, "addendum": 1, "decision": 2}

LOG: Table = EvaluationLogEntry.__table__  # type: ignore[attr-defined]
HEAD: Table = EvaluationLogHead.__table__  # type: ignore[attr-defined]
PUBLISHED: Table = PublishedHead.__table__  # type: ignore[attr-defined]

_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers would not round-trip
_PENDING = "gateway.audit.pending"


class LogError(RuntimeError):
    """A record cannot be put in the log (a value outside what its canonical JSON can carry)."""


@dataclass(frozen=True)
class Head:
    """Where the log ends: the last entry's seq and hash (hex sha256)."""

    seq: int
    hash: str


def render_time(value: datetime) -> str:
    """A stored time as UTC ISO 8601 with microseconds and Z, whatever the connection's time zone."""
    return as_utc(value).isoformat(timespec="microseconds")[:-6] + "Z"


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise LogError(f"integer {value} is outside the range canonical JSON carries exactly")
    if isinstance(value, datetime):
        return render_time(value)
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    raise LogError(f"a {type(value).__name__} cannot be logged")


def record_of(kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The logged form of a stored evaluation record (a row of its table, by column name)."""
    return {name: _value(row[name]) for name in FIELDS[kind]}


def entry_document(seq: int, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """What is hashed: the record with its kind and its place in the log."""
    return {"seq": seq, "kind": kind, "record": record}


def canonical(document: dict[str, Any]) -> str:
    """RFC 8785 (JCS) canonical JSON of an entry."""
    return rfc8785.dumps(document).decode("utf-8")


def canonical_record(record: dict[str, Any]) -> str:
    """RFC 8785 canonical JSON of a record alone, to be placed in its entry by `entry_text`: the C
    encoder's text, which is RFC 8785's for logged records (`fast_canonical`)."""
    return fast_canonical(record)


def entry_text(seq: int, kind: str, record_text: str) -> str:
    """`canonical(entry_document(seq, kind, record))`, given the record's canonical text: the entry's
    keys sort as kind < record < seq, and a canonical value stays canonical nested (RFC 8785 §3.2)."""
    if kind not in FIELDS:
        raise ValueError(f"unknown evaluation record kind {kind!r}")
    return f'{{"kind":"{kind}","record":{record_text},"seq":{seq}}}'


def fast_canonical(document: dict[str, Any]) -> str:
    """The same text as `canonical` for entries (ASCII keys, strings, safe integers, null, lists),
    from the C JSON encoder: what the append and verify's reference check use.

    Within that domain RFC 8785 and `json.dumps(sort_keys, no spaces, ensure_ascii=False)` agree:
    keys sort the same, strings escape the same characters the same way, integers print alike.
    A test checks the two against each other on generated records.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, text: str) -> str:
    """sha256 over the previous hash's 32 bytes followed by the entry's UTF-8 canonical JSON."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Pending:
    """A record written in this transaction, and its canonical text taken from the flushed object
    (None when that object cannot be trusted to be what was stored: the row is then read back)."""

    kind: str
    record_id: int
    at: datetime
    obj: Any
    text: str | None


def queue_record(session: AsyncSession, *, kind: str, record: Any, at: datetime) -> None:
    """Note a flushed record; it is appended to the log when this session's transaction commits."""
    if kind not in FIELDS:
        raise ValueError(f"unknown evaluation record kind {kind!r}")
    record_id = record.id
    if record_id is None:
        raise ValueError(f"flush the {kind} before queueing it: it has no id yet")
    pending: list[_Pending] = session.sync_session.info.setdefault(_PENDING, [])
    if not any(p.kind == kind and p.record_id == record_id for p in pending):
        pending.append(_Pending(kind, record_id, at, record, _flushed_text(kind, record)))


def _flushed_text(kind: str, record: Any) -> str | None:
    """The record's canonical JSON from the values just flushed, if every field holds a value of its
    column's type that the database keeps as it is (then the stored row renders the same text)."""
    values = inspect(record).dict
    record_values: dict[str, Any] = {}
    for name in FIELDS[kind]:
        if name not in values:  # not loaded (expired, or a server default): read the row instead
            return None
        value: Any = values[name]
        expected = _TYPES[kind][name]
        if isinstance(value, datetime):
            if expected is not datetime or value.utcoffset() not in (None, _ZERO):
                return None  # SQLite would keep the wall time and drop the offset
        elif isinstance(value, list):
            if expected is not list or not all(type(v) is int for v in value):
                return None
        elif value is not None and type(value) is not expected:
            return None
        record_values[name] = _value(value)
    return fast_canonical(record_values)


def _python_type(column: Any) -> type:
    if isinstance(column.type, DateTime):
        return datetime
    if isinstance(column.type, JSON):
        return list
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type  # sqlmodel's AutoString
    python_type = kind.python_type
    if python_type not in (int, str):
        raise TypeError(f"no logged form for column {column.name} of type {column.type}")
    return python_type


_TYPES: dict[str, dict[str, type]] = {
    kind: {name: _python_type(TABLES[kind].c[name]) for name in fields} for kind, fields in FIELDS.items()
}
_ZERO = timedelta(0)


@event.listens_for(Session, "before_commit")
def _append_at_commit(session: Session) -> None:
    # Fired for savepoints too: only the outermost commit appends.
    if session.in_nested_transaction():
        return
    pending: list[_Pending] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    conn = session.connection()
    # A record flushed inside a savepoint that was rolled back left the session with it: such records
    # (and any whose text is not known) are looked for in the database, and logged only if there.
    unsure = [(p.kind, p.record_id, p.at) for p in pending if p.text is None or not inspect(p.obj).persistent]
    rows = _source_rows(conn, unsure) if unsure else {}
    records: list[tuple[str, int, datetime, str]] = []
    for p in pending:
        if p.text is not None and inspect(p.obj).persistent:
            records.append((p.kind, p.record_id, p.at, p.text))
        elif (row := rows.get((p.kind, p.record_id))) is not None:
            records.append((p.kind, p.record_id, p.at, canonical_record(record_of(p.kind, row))))
    if not records:
        return
    if conn.dialect.name == "postgresql":
        _append_in_database(conn, records)
    else:
        _append_texts(conn, records)


@event.listens_for(Session, "after_transaction_end")
def _forget_on_rollback(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


_APPEND_SQL = text(
    "SELECT head_seq, head_hash FROM evaluation_log_append(CAST(:kinds AS text[]), CAST(:ids AS bigint[]), "
    "CAST(:records AS text[]), CAST(:times AS timestamptz[]))"
)


def _append_in_database(conn: Connection, records: Sequence[tuple[str, int, datetime, str]]) -> Head:
    """PostgreSQL: lock, number, hash, insert and move the head in one round trip (the function made by
    migration a1f0c3e5b101 does what `_append_texts` does)."""
    row = conn.execute(
        _APPEND_SQL,
        {
            "kinds": [r[0] for r in records],
            "ids": [r[1] for r in records],
            "records": [r[3] for r in records],
            "times": [r[2] for r in records],
        },
    ).one()
    return Head(row.head_seq, row.head_hash)


def append(conn: Connection, pending: Sequence[tuple[str, int, datetime]]) -> Head:
    """Append the stored records (kind, id, at) in order, read back from the database, under the head's
    lock; returns the new head. The back-fill's way: a commit's records come from their flushed objects."""
    rows = _source_rows(conn, pending)
    # (A record missing here was written inside a savepoint that was rolled back: nothing to log.)
    return _append_texts(
        conn,
        [
            (kind, record_id, at, canonical_record(record_of(kind, row)))
            for kind, record_id, at in pending
            if (row := rows.get((kind, record_id))) is not None
        ],
    )


def _append_texts(conn: Connection, records: Sequence[tuple[str, int, datetime, str]]) -> Head:
    """Number, chain and insert records (kind, id, at, canonical record text) under the head's lock."""
    head = _lock_head(conn)
    seq, prev = head.seq, head.hash
    entries = []
    for kind, record_id, at, record_text in records:
        seq += 1
        entry = entry_text(seq, kind, record_text)
        digest = chain_hash(prev, entry)
        entries.append(
            {
                "seq": seq,
                "kind": kind,
                "record_id": record_id,
                "record": entry,
                "prev_hash": prev,
                "hash": digest,
                "created_at": at,
            }
        )
        prev = digest
    if entries:
        move = update(HEAD).where(HEAD.c.id == 1).values(seq=seq, hash=prev)
        if conn.dialect.name == "postgresql":  # one round trip: the head moves in the INSERT's CTE
            conn.execute(insert(LOG).values(entries).add_cte(move.cte("moved")))
        else:
            conn.execute(insert(LOG), entries)
            conn.execute(move)
    return Head(seq, prev)


def _source_rows(conn: Connection, pending: Iterable[tuple[str, int, datetime]]) -> dict[tuple[str, int], Any]:
    # Read back what was stored: the log holds the row as the database keeps it, not the Python object.
    by_kind: dict[str, list[int]] = {}
    for kind, record_id, _ in pending:
        by_kind.setdefault(kind, []).append(record_id)
    rows: dict[tuple[str, int], Any] = {}
    for kind, ids in by_kind.items():
        table = TABLES[kind]
        columns = [table.c[name] for name in FIELDS[kind]]
        for row in conn.execute(select(*columns).where(table.c.id.in_(ids))).mappings():
            rows[(kind, row["id"])] = row
    return rows


def _lock_head(conn: Connection) -> Head:
    statement = select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update()
    row = conn.execute(statement).first()
    if row is None:
        # The head row is made by the migration; rebuild it from the log's end if it was removed
        # (only possible with its triggers disabled). A concurrent rebuild does nothing and the
        # locked read below then sees the committed row.
        last = conn.execute(select(LOG.c.seq, LOG.c.hash).order_by(LOG.c.seq.desc()).limit(1)).first()
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(HEAD)
            .values(id=1, seq=last.seq if last else 0, hash=last.hash if last else GENESIS)
            .on_conflict_do_nothing()
        )
        row = conn.execute(statement).one()
    return Head(row.seq, row.hash)


async def current_head(session: AsyncSession) -> Head | None:
    """The log's head as committed now; None while the log is empty."""
    row = (await session.exec(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()  # type: ignore[call-overload]
    if row is None:
        last = select(LOG.c.seq, LOG.c.hash).order_by(LOG.c.seq.desc()).limit(1)
        row = (await session.exec(last)).first()  # type: ignore[call-overload]
    if row is None or row.seq == 0:
        return None
    return Head(row.seq, row.hash)


async def publish_head(session: AsyncSession, *, at: datetime, where: str) -> Head | None:
    """Record that the current head is being shown at `where` (once per head and place); return it.

    Call it in the transaction that reads the figures being published, and show the head beside them.
    """
    if not where or len(where) > 64:
        raise ValueError("where names the place of publication, 1 to 64 characters")
    head = await current_head(session)
    if head is None:
        return None
    await insert_if_absent(session, PublishedHead, seq=head.seq, hash=head.hash, place=where, published_at=at)
    return head
