"""Several INSERTs in one statement on PostgreSQL: data-modifying CTEs, each table's rows bound as JSON.

A report of one case writes five to eight tables; sent one INSERT at a time, each costs a round trip and
the driver's and SQLAlchemy's work per statement, far more than the rows themselves. `chained_insert`
sends them as one statement:

    WITH p0 AS (INSERT INTO citizen (…) SELECT r.id, … FROM json_populate_recordset(NULL::citizen, :p0) AS r
                WHERE true RETURNING 1),
         p1 AS (INSERT INTO invitation (…) SELECT … FROM json_populate_recordset(NULL::invitation, :p1) AS r
                WHERE (SELECT count(*) FROM p0) >= 0 RETURNING 1),
         …
    SELECT …the returning columns of the part that answers…

Each table's rows are one parameter, a JSON array of objects that PostgreSQL reads as rows of the table
(its column types convert the values), so the statement's text depends on the parts only, never on the
number of rows: it is built once, and asyncpg prepares it once per connection. One text per table costs
the driver far less than an array per column. Each part reads the
row count of the part before it, which makes PostgreSQL finish the parts in the order given (the
sub-statements of a WITH otherwise run in an order the planner chooses): the order in which the
statement takes its row locks is the order of the parts, and of the rows within each part. Foreign keys
between the parts hold, since PostgreSQL checks them at the end of the statement; but all the parts read
one snapshot, taken before the statement, so an UPDATE part changes rows that were there before it. The ids the rows
refer to are taken beforehand (`nextval`), so every row is complete before the statement is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import TextClause, text
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.store.db import fetch_rows


@dataclass(frozen=True)
class Part:
    """One INSERT of the statement: the table's `columns` from rows (dicts with those keys).

    `tail`: what follows the rows (an ON CONFLICT clause); `returning`: the columns the statement answers
    (one part at most). With `update_where`, the part is an UPDATE instead: the table's rows whose `id`
    is a row's `id` get that row's other columns, where `update_where` (SQL on the table) holds."""

    model: Any
    columns: tuple[str, ...]
    tail: str = ""
    returning: tuple[str, ...] = ()
    update_where: str = ""


_STATEMENTS: dict[tuple[Part, ...], TextClause] = {}


def _statement(parts: tuple[Part, ...]) -> TextClause:
    statement = _STATEMENTS.get(parts)
    if statement is not None:
        return statement
    ctes: list[str] = []
    for n, part in enumerate(parts):
        name = part.model.__table__.name
        rows = f"json_populate_recordset(NULL::{name}, CAST(:p{n} AS json)) AS r"
        # `WHERE true` on the first part: a SELECT ending in a FROM item would take ON CONFLICT for a join's ON.
        after = f"(SELECT count(*) FROM p{n - 1}) >= 0" if n else "true"
        returning = ", ".join(part.returning) if part.returning else "1"
        if part.update_where:
            values = ", ".join(f"{column} = r.{column}" for column in part.columns if column != "id")
            ctes.append(
                f"p{n} AS (UPDATE {name} SET {values} FROM {rows} "
                f"WHERE {name}.id = r.id AND {part.update_where} AND {after} RETURNING {returning})"
            )
        else:
            ctes.append(
                f"p{n} AS (INSERT INTO {name} ({', '.join(part.columns)}) "
                f"SELECT {', '.join(f'r.{c}' for c in part.columns)} FROM {rows} WHERE {after} {part.tail} "
                f"RETURNING {returning})"
            )
    answering = [n for n, part in enumerate(parts) if part.returning]
    if len(answering) > 1:
        raise ValueError("one part at most may answer")
    if answering:
        statement = text(
            f"WITH {', '.join(ctes)} SELECT {', '.join(parts[answering[0]].returning)} FROM p{answering[0]}"
        )
    else:
        statement = text(f"WITH {', '.join(ctes)} SELECT count(*) FROM p{len(parts) - 1}")
    _STATEMENTS[parts] = statement
    return statement


async def chained_insert(
    session: AsyncSession, parts: Sequence[tuple[Part, list[dict[str, Any]]]]
) -> list[tuple[Any, ...]]:
    """Write each part's rows, all in one statement, in the order given; the `returning` columns of the
    rows the answering part wrote (none without one)."""
    shape = tuple(part for part, _ in parts)
    params = {f"p{n}": _ENCODER.encode(rows) for n, (_, rows) in enumerate(parts)}
    answer = [tuple(row) for row in await fetch_rows(session, _statement(shape), params)]
    return answer if any(part.returning for part in shape) else []


def _json_value(value: Any) -> str:
    """A time or day as PostgreSQL reads it (a time without a zone is UTC, as asyncpg takes it)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_value)
