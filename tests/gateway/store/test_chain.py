"""The chained insert (PostgreSQL): several tables' rows in one statement, written in the order of the parts
(the order in which the statement takes its locks), through a transaction's session or an autocommit one."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlmodel import col, select

from gateway.store.chain import Part, chained_insert
from gateway.store.db import Store
from gateway.store.models import Citizen, Organisation, OutboundMessage

AT = datetime(2026, 3, 4, 2, 0, tzinfo=timezone.utc)
ORG = Part(Organisation, ("code", "name", "kind", "region_code", "created_at"))


def _postgresql(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("the chained insert is PostgreSQL's")
    return database_url  # emptied before the test


def _org(code: str) -> dict[str, object]:
    return {"code": code, "name": f"单位 {code}", "kind": "unit", "region_code": "610902", "created_at": AT}


@pytest.mark.parametrize("sessions", ["transaction", "autocommit"])
async def test_the_parts_are_written_in_their_order(database_url, sessions):
    store = Store.connect(_postgresql(database_url))
    try:
        async with getattr(store, sessions)() as session:
            # Four parts of the same table, their ids from its sequence: the ids tell the order of the writes
            # (without the chaining PostgreSQL writes the parts a WITH does not read last, in reverse order).
            parts = [(ORG, [_org(f"{sessions}-{n}-a"), _org(f"{sessions}-{n}-b")]) for n in range(4)]
            assert await chained_insert(session, parts) == []
        async with store.transaction() as session:
            query = select(Organisation).where(col(Organisation.code).startswith(sessions)).order_by(col(Organisation.id))
            written = (await session.exec(query)).all()
        assert [o.code for o in written] == [f"{sessions}-{n}-{x}" for n in range(4) for x in "ab"]
    finally:
        await store.close()


async def test_rows_refer_to_rows_of_an_earlier_part_and_one_part_answers(database_url):
    """A row may refer to a row another part writes (foreign keys are checked at the end of the statement);
    an UPDATE part sees the rows as they were before the statement (one snapshot for all the parts)."""
    store = Store.connect(_postgresql(database_url))
    try:
        async with store.autocommit() as session:
            known = {"id": 800, "phone_hash": "h-800", "name_enc": None, "created_at": AT}
            await chained_insert(session, [(Part(Citizen, tuple(known)), [known])])
            citizen = {"id": 900, "phone_hash": "h-900", "name_enc": None, "created_at": AT}
            named = {"id": 800, "name_enc": "名"}
            message = {
                "channel": "sms",
                "citizen_id": 900,  # the citizen the first part writes
                "purpose": "notice",
                "priority": 0,
                "body": "好",
                "buttons": [[{"text": "非常满意", "data": "5"}]],
                "status": "queued",
                "not_before": None,
                "next_attempt_at": AT,
                "attempts": 0,
                "dedupe_key": "chain:1",
                "created_at": AT,
                "updated_at": AT,
            }
            answer = await chained_insert(
                session,
                [
                    (Part(Citizen, tuple(citizen)), [citizen]),
                    (Part(Citizen, tuple(named), update_where="citizen.name_enc IS NULL"), [named]),
                    (Part(OutboundMessage, tuple(message), tail="ON CONFLICT (dedupe_key) DO NOTHING", returning=("id", "citizen_id")), [message]),
                ],
            )
            assert [row[1] for row in answer] == [900]
            again = await chained_insert(session, [(Part(OutboundMessage, tuple(message), tail="ON CONFLICT (dedupe_key) DO NOTHING", returning=("id", "citizen_id")), [message])])
            assert again == []  # the duplicate was skipped
        async with store.transaction() as session:
            stored = (await session.exec(select(OutboundMessage))).one()
            person = await session.get(Citizen, 800)
        assert stored.buttons == [[{"text": "非常满意", "data": "5"}]] and stored.body == "好"
        assert stored.next_attempt_at.astimezone(timezone.utc) == AT
        assert person is not None and person.name_enc == "名"
    finally:
        await store.close()


async def test_a_statement_the_server_refuses_is_sqlalchemys_error_and_the_connection_stays(database_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from gateway.store.db import fetch_rows

    store = Store.connect(_postgresql(database_url))
    try:
        async with store.autocommit() as session:
            with pytest.raises(DBAPIError) as refused:
                await fetch_rows(session, text("SELECT 1 / CAST(:n AS int)"), {"n": 0})
            assert not isinstance(refused.value, IntegrityError) and "division by zero" in str(refused.value)
            assert await fetch_rows(session, text("SELECT 6 / CAST(:n AS int)"), {"n": 2}) == [(3,)]
    finally:
        await store.close()
