"""The inbox claim stays as cheap as the backlog, however many messages were processed: on PostgreSQL
its plan reads the partial indexes on `state = 'pending'`, also as a prepared statement's generic plan
(the state is written into the SQL, not bound, so the planner can match it to the indexes' predicate)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, text

from gateway.web.keys import INBOX, STORE


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_claim_reads_the_partial_indexes(client, database_url):
    store = client.app[STORE]
    now = client.app[INBOX].runner.deps.clock.now()
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO inbound_message (provider, provider_id, received_at, state, sender_hash, attempts)"
                " SELECT 'twilio', 'SMdone' || n, :at, 'processed', 'h' || (n % 500), 1"
                " FROM generate_series(1, 20000) AS n"
            ),
            {"at": now - timedelta(days=1)},
        )
        await conn.execute(
            text(
                "INSERT INTO inbound_message (provider, provider_id, received_at, state, sender_hash, sender_enc, body,"
                " attempts) SELECT 'twilio', 'SMnew' || n, :at, 'pending', 'h' || n, 'x', '5', 0"
                " FROM generate_series(1, 3) AS n"
            ),
            {"at": now},
        )
        await conn.execute(text("ANALYZE inbound_message"))

    statements: list[tuple[str, object]] = []

    def remember(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().startswith("SELECT inbound_message.id"):
            statements.append((statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", remember)
    try:
        claimed = await client.app[INBOX].claim()
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", remember)
    assert len(claimed) == 3
    [(statement, parameters)] = statements
    assert "'pending'" in statement  # written into the SQL, not a parameter

    arguments = ", ".join(_literal(value) for value in parameters)  # type: ignore[attr-defined]
    for mode in ("force_custom_plan", "force_generic_plan"):
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
            await conn.exec_driver_sql("PREPARE claim AS " + statement)
            explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE claim({arguments})")
            plan = "\n".join(r[0] for r in explained.all())
            await conn.exec_driver_sql("DEALLOCATE claim")
        assert "ix_inbound_pending_id" in plan and "ix_inbound_pending on" in plan, plan
        assert "Seq Scan on inbound_message" not in plan, plan


def _literal(value: object) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
