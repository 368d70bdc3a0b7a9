"""Helpers for work-order tests: tickets are created the real way, by reporting a case and rating it badly."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import World, case_payload
from tests.gateway.tickets.helpers import Api

_numbers = itertools.count(1)

MakeTicket = Callable[..., Awaitable[int]]


@pytest.fixture
def make_ticket(client, world: World, clock) -> MakeTicket:  # type: ignore[no-untyped-def]
    """Report a case (by default hanbin-market's, in 汉滨区 610902) and rate it 2 with reason 213."""

    async def make(
        *, org: str = "hanbin-market", region: str = "610902", reporter: str | None = None,
        reasons: list[int] | None = None, citizen: dict[str, Any] | None = None, completed_at: datetime | None = None,
    ) -> int:
        overrides: dict[str, Any] = {"org_code": org, "region_code": region}
        if citizen is not None:
            overrides["citizen"] = citizen
        overrides["completed_at"] = (completed_at or clock.now()).isoformat()
        payload = case_payload(f"T-{next(_numbers):05d}", **overrides)
        resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(reporter or org))
        body = await resp.json()
        assert resp.status == 201, body
        token = body["invitation"]["token"]
        resp = await client.post(f"/r/{token}", json={"level": 2, "reasons": reasons or [213]})
        rated = await resp.json()
        assert resp.status == 201, rated
        assert rated["ticket_id"] is not None
        return int(rated["ticket_id"])

    return make


@pytest.fixture
def api(client, world: World) -> Api:  # type: ignore[no-untyped-def]
    return Api(client, world)
