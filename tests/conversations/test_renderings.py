"""A reply's shorter renderings are built when asked for, in order, each once."""

from __future__ import annotations

from itertools import chain

import pytest

from conversations.model import Renderings, Reply


def _counting() -> tuple[list[tuple[int, int]], Renderings]:
    built: list[tuple[int, int]] = []

    def build(item: int, office: int) -> Reply:
        built.append((item, office))
        return Reply(f"{item}/{office}")

    return built, Renderings(build, [(20, 8), (20, 4), (12, 0)])


def test_nothing_is_built_until_asked_for_and_each_rendering_once() -> None:
    built, shorter = _counting()
    assert len(shorter) == 3 and built == []
    assert shorter[1].text == "20/4"
    assert built == [(20, 8), (20, 4)]  # in order, up to the one asked for
    assert [r.text for r in shorter] == ["20/8", "20/4", "12/0"]
    assert shorter[-1].text == "12/0" and [r.text for r in shorter[:2]] == ["20/8", "20/4"]
    assert built == [(20, 8), (20, 4), (12, 0)]  # none twice
    for outside in (3, -4):
        with pytest.raises(IndexError, match="rendering index out of range"):
            shorter[outside]


def test_the_first_fitting_rendering_stops_the_building() -> None:
    built, shorter = _counting()
    first = next(r for r in chain((Reply("long"),), shorter) if r.text.endswith("/8"))
    assert first.text == "20/8" and built == [(20, 8)]
