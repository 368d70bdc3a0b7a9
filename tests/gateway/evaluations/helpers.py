"""Helpers for evaluation tests: counting rows, reporting cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import select

from gateway.store.models import Evaluation, Invitation, OutboundMessage, ServiceCase, Ticket
from gateway.web.keys import STORE
from tests.conftest import case_payload


async def count(client: Any, model: Any) -> int:
    async with client.app[STORE].transaction() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


async def counts(client: Any) -> dict[str, int]:
    return {m.__name__: await count(client, m) for m in (ServiceCase, Invitation, Evaluation, Ticket, OutboundMessage)}


async def report(client: Any, world: Any, org: str = "hanbin-market", **overrides: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/cases", json=case_payload(**overrides), headers=world.auth(org))
    body = await resp.json()
    assert resp.status in (200, 201), body
    return body
