"""Field types that read JSON as JSON Schema does.

`WholeInt`: an integer field. JSON Schema's "integer" is any number with a zero fractional part, so
`1.0` is accepted (as 1), like `1`; `1.5`, `"1"` and `true` are refused, as the schema says.
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BeforeValidator, StrictInt


def whole_number(value: Any) -> Any:
    """A float with no fractional part as the integer it is (JSON Schema's reading of "integer")."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeInt = Annotated[StrictInt, BeforeValidator(whole_number)]


def whole_int(ge: int, le: int) -> Any:
    """A WholeInt within bounds, for list items and other places a Field() cannot go; the bounds show
    in the JSON Schema as minimum and maximum."""
    return Annotated[StrictInt, Ge(ge), Le(le), BeforeValidator(whole_number)]


__all__ = ["WholeInt", "whole_int", "whole_number"]
