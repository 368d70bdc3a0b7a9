"""Several INSERTs in one statement on PostgreSQL: data-modifying CTEs, each table's rows bound as arrays.

A report of one case writes five to eight tables; sent one INSERT at a time, each costs a round trip and
the driver's and SQLAlchemy's work per statement, far more than the rows themselves. `chained_insert`
sends them as one statement:

    WITH p0 AS (INSERT INTO citizen (…) SELECT * FROM unnest(CAST(:p0_id AS INTEGER[]), …) RETURNING 1),
         p1 AS (INSERT INTO invitation (…) SELECT * FROM unnest(…) WHERE (SELECT count(*) FROM p0) >= 0 …),
         …
    SELECT …the returning columns of the last part…

Each column is one array parameter, so the statement's text depends on the parts only, never on the
number of rows: it is built once, and asyncpg prepares it once per connection. Each part reads the
row count of the part before it, which makes PostgreSQL finish the parts in the order given (the
sub-statements of a WITH otherwise run in an order the planner chooses): the order in which the
statement takes its row locks is the order of the parts, and of the rows within each part. Foreign keys
between the parts hold, since PostgreSQL checks them at the end of the statement. The ids the rows
refer to are taken beforehand (`nextval`), so every row is complete before the statement is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.store.db import fetch_rows

_DIALECT = postgresql.dialect()


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
        table = part.model.__table__
        arrays = ", ".join(
            f"CAST(:p{n}_{column} AS {table.c[column].type.compile(dialect=_DIALECT)}[])" for column in part.columns
        )
        # `WHERE true` on the first part: a SELECT ending in a FROM item would take ON CONFLICT for a join's ON.
        after = f"(SELECT count(*) FROM p{n - 1}) >= 0" if n else "true"
        returning = ", ".join(part.returning) if part.returning else "1"
        if part.update_where:
            values = ", ".join(f"{column} = r.{column}" for column in part.columns if column != "id")
            ctes.append(
                f"p{n} AS (UPDATE {table.name} SET {values} FROM unnest({arrays}) AS r({', '.join(part.columns)}) "
                f"WHERE {table.name}.id = r.id AND {part.update_where} AND {after} RETURNING {returning})"
            )
        else:
            ctes.append(
                f"p{n} AS (INSERT INTO {table.name} ({', '.join(part.columns)}) "
                f"SELECT * FROM unnest({arrays}) AS r WHERE {after} {part.tail} RETURNING {returning})"
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
    params: dict[str, list[Any]] = {}
    for n, (part, rows) in enumerate(parts):
        for column, as_json in _columns(part):
            values = [row[column] for row in rows]
            if as_json:  # asyncpg takes JSON as its text
                values = [None if v is None else json.dumps(v) for v in values]
            params[f"p{n}_{column}"] = values
    answer = [tuple(row) for row in await fetch_rows(session, _statement(shape), params)]
    return answer if any(part.returning for part in shape) else []


_COLUMNS: dict[Part, tuple[tuple[str, bool], ...]] = {}


def _columns(part: Part) -> tuple[tuple[str, bool], ...]:
    """The part's columns, each with whether it holds JSON."""
    columns = _COLUMNS.get(part)
    if columns is None:
        table = part.model.__table__
        columns = _COLUMNS[part] = tuple((c, isinstance(table.c[c].type, JSON)) for c in part.columns)
    return columns
