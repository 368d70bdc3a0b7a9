"""Evaluation-log tests: records written the real way, and tampering done as the database owner."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from gateway.evaluations.service import add_reasons, add_staff_rating, invitation_by_token, record_rating
from gateway.store.db import Store
from gateway.store.models import Evaluation
from gateway.web.keys import DEPS, STORE
from tests.conftest import World, case_payload

_numbers = itertools.count(1)


@dataclass
class Written:
    """What `populate` wrote: kinds in the order they were written."""

    kinds: list[str]
    bad_ticket_id: int


async def report(client: Any, world: World, **overrides: Any) -> str:
    payload = case_payload(
        f"AU-{next(_numbers):05d}", completed_at=client.app[DEPS].clock.now().isoformat(), **overrides
    )
    resp = await client.post("/api/v1/cases", json=payload, headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 201, body
    return str(body["invitation"]["token"])


async def rate(client: Any, token: str, **rating: Any) -> dict[str, Any]:
    resp = await client.post(f"/r/{token}", json=rating)
    body = await resp.json()
    assert resp.status == 201, body
    return dict(body)


async def act(client: Any, world: World, org: str, ticket_id: int, action: str, **fields: Any) -> None:
    resp = await client.post(
        f"/api/v1/tickets/{ticket_id}/actions", json={"action": action, **fields}, headers=world.auth(org)
    )
    assert resp.status == 200, await resp.json()


async def populate(client: Any, world: World) -> Written:
    """Evaluations, addenda and a ruling, each through the service that writes it."""
    clock, store, deps = client.app[DEPS].clock, client.app[STORE], client.app[DEPS]
    kinds: list[str] = []
    await rate(client, await report(client, world), level=5, staff_level=4)
    kinds.append("evaluation")
    clock.advance(seconds=1)
    bad = await rate(client, await report(client, world), level=2, reasons=[213], text='同一份证明交了三次\n"两次"')
    kinds.append("evaluation")
    clock.advance(seconds=1)
    token = await report(client, world)
    async with store.transaction() as session:
        invitation = await invitation_by_token(session, token)
        rated = await record_rating(
            session, invitation=invitation, level=1, channel="sms", deps=deps, require_content=False
        )
        await add_reasons(
            session, evaluation=rated.evaluation, codes=[115], text="态度差\t\\ \x01\u2028😀", channel="sms", deps=deps
        )
        kinds += ["evaluation", "addendum"]
    clock.advance(seconds=1)
    async with store.transaction() as session:
        first = (await session.exec(select(Evaluation).order_by(Evaluation.id))).first()  # type: ignore[arg-type]
        assert first is not None
        await add_staff_rating(session, evaluation=first, staff_level=3, channel="web", deps=deps)
        kinds.append("addendum")
    clock.advance(seconds=1)
    ticket_id = int(bad["ticket_id"])
    await act(client, world, "hanbin", ticket_id, "transfer")
    await act(client, world, "hanbin-market", ticket_id, "accept", category="general")
    await act(client, world, "hanbin-market", ticket_id, "appeal", grounds="malicious", evidence="rated by a rival")
    await act(client, world, "hanbin", ticket_id, "decide_appeal", decision="malicious", reason="CCTV log")
    kinds.append("decision")
    return Written(kinds, ticket_id)


async def tamper(store: Store, *statements: str | tuple[str, dict[str, Any]]) -> None:
    """Run SQL (a statement, or one with its parameters) as the database owner, protecting triggers off."""
    async with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            names = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))).scalars().all()
            for name in names:
                await conn.execute(text(f'DROP TRIGGER "{name}"'))
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, {})
            await conn.execute(text(sql), params)


@pytest.fixture
def store(client: Any) -> Store:
    return client.app[STORE]  # type: ignore[no-any-return]
