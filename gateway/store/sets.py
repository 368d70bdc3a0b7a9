"""`column IN (a set of values)` bound as one parameter, for statements built once.

SQLAlchemy's expanding IN (`column.in_(bindparam(name, expanding=True))`) renders one placeholder per
value at every execution, so each number of values is a different statement text: rendered anew each
time, and prepared anew by asyncpg whenever that text is not in its cache. On PostgreSQL `in_set`
renders `column = ANY($n)` with the values as one array: one text, prepared once, whatever the number
of values. Elsewhere (SQLite) it is the expanding IN.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ARRAY, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.sqltypes import NULLTYPE
from sqlalchemy.sql.visitors import InternalTraversal


class InSet(ColumnElement[bool]):
    """`column IN (:name)`, the values bound at execution under `name` (a list)."""

    inherit_cache = True
    type = NULLTYPE  # type: ignore[assignment]  # a Boolean would render `… IN (…) = 1` on SQLite
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: Any, name: str) -> None:
        self.column, self.name = column, name


def in_set(column: Any, name: str) -> InSet:
    return InSet(column, name)


@compiles(InSet, "postgresql")
def _any_array(element: InSet, compiler: Any, **kw: Any) -> str:
    values = bindparam(element.name, type_=ARRAY(element.column.type))
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(values, **kw)})"


@compiles(InSet)
def _expanding(element: InSet, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw))
