"""Helpers for statistics tests: ratings are made the real way, by reporting a case and rating it."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import World, case_payload

_numbers = itertools.count(1)

Rate = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def rate(client, world: World, clock) -> Rate:  # type: ignore[no-untyped-def]
    """Report a case and rate it through the rating page; returns the rating's answer."""

    async def make(level: int, *, org: str = "hanbin-market", region: str = "610902", reasons: list[int] | None = None,
                   text: str = "", **overrides: Any) -> dict[str, Any]:
        payload = case_payload(f"S-{next(_numbers):05d}", org_code=org, region_code=region,
                               completed_at=clock.now().isoformat(), **overrides)
        resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(org))
        body = await resp.json()
        assert resp.status == 201, body
        token = body["invitation"]["token"]
        rating: dict[str, Any] = {"level": level}
        if reasons is not None:
            rating["reasons"] = reasons
        if text:
            rating["text"] = text
        if level <= 2 and reasons is None and not text:
            rating["reasons"] = [213 if level == 2 else 115]
        resp = await client.post(f"/r/{token}", json=rating)
        rated = await resp.json()
        assert resp.status == 201, rated
        return rated  # type: ignore[no-any-return]

    return make
