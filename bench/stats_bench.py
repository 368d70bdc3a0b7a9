"""Statistics benchmark: GET /api/v1/stats for the whole city over a month and a year, and /public/stats,
warm (p50/p95 over repeated requests) and cold (the first request of a fresh gateway process), with the CPU
per request of the gateway and of the PostgreSQL backends serving it.

The store is seeded set-based in PostgreSQL (generate_series): organisations (300 units in 10 counties),
2,000 service items, N evaluations with their invitations and cases spread over two years in time order, a
ticket for every bad review (most closed, some late) with its resolve event, and the roll-ups, each filled by
one INSERT … SELECT, the set-based form of `gateway stats rebuild` (the gateway keeps the same rows up to date
record by record and ticket action by ticket action; tests/gateway/stats/test_rollup_property.py checks both
agree). The loaded tables' foreign keys, unique constraints and secondary indexes are dropped for the load and
created again after it, as the migrations made them. What is measured, real `gateway serve` processes
answering HTTP requests from the roll-ups, is the path a deployment takes.

    flock /work/wt/bench.lock .venv/bin/python -m bench.stats_bench --evaluations 10000000 [--repeat 50] [--keep]
    .venv/bin/python -m bench.stats_bench --reuse bench_stats_XXXXXXXX [--only year]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg

from bench.common import PG_ADMIN, database_url, free_port, gateway, machine, percentiles, run, wait_ready

UNITS = 300
COUNTIES = 10
ITEMS = 2000
DAYS = 730
STAFF_PER_UNIT = 8

LOADED = ("invitation", "service_case", "evaluation", "ticket", "ticket_event", "stats_ticket_daily",
          "stats_ticket_monthly", "stats_unit_daily", "stats_unit_monthly", "stats_daily", "stats_reason_daily")

ORGS_SQL = """
INSERT INTO organisation (id, code, name, kind, region_code, parent_id, created_at)
SELECT 100 + c, 'county-' || c, '第' || c || '区行政审批服务局', 'county_dept', '6109' || lpad((c + 1)::text, 2, '0'),
       NULL, now() FROM generate_series(1, {counties}) c;
INSERT INTO organisation (id, code, name, kind, region_code, parent_id, created_at)
SELECT 1000 + u, 'unit-' || u, '第' || u || '号承办单位', 'unit', '6109' || lpad((u % {counties} + 2)::text, 2, '0'),
       100 + (u % {counties} + 1), now() FROM generate_series(1, {units}) u;
SELECT setval(pg_get_serial_sequence('organisation', 'id'), 10000);
"""

# One invitation, one case and one evaluation per rating, in time order as a deployment writes them: rating i
# falls on day (i - 1) * DAYS / N; its item cycles through the 2,000, its level, channel and staff member come from
# hashes of i (hashint8), so that every unit sees every level on most days.
RATINGS_SQL = """
CREATE TEMP TABLE r AS
SELECT i, item, at, level, channel, unit, '6109' || lpad((unit % {counties} + 2)::text, 2, '0') AS region,
       'S' || unit || '-' || ((hashint8(-i) & 2147483647) % {staff}) AS staff,
       (at AT TIME ZONE 'Asia/Shanghai')::date AS day
FROM (SELECT i, item,
             timestamptz '{start}' + ((i - 1) * {days} / {n}) * interval '1 day' + ((i * 37) % 36000) * interval '1 second'
               AS at,
             CASE WHEN p < 85 THEN 5 WHEN p < 93 THEN 4 WHEN p < 97 THEN 3 WHEN p < 99 THEN 2 ELSE 1 END AS level,
             (ARRAY['web','sms','bot','qr','evaluator'])[1 + (hashint8(i + {n}) & 2147483647) % 5] AS channel,
             1 + item % {units} AS unit
      FROM (SELECT i, 1 + (i * 7919) % {items} AS item, (hashint8(i) & 2147483647) % 100 AS p
            FROM generate_series(1::bigint, {n}) i) g) x;
"""

TABLES_SQL = [
    ("invitation", """
INSERT INTO invitation (id, token, org_id, citizen_id, kind, group_no, region_code, item_name, office_name,
                        service_channel, completed_at, expires_at, expires_provisional, status, rated_at, created_at)
SELECT i, 'b' || i, 1000 + unit, NULL, 'single', 'C' || i, region, '事项' || item, '大厅', 'window', at - interval '1 hour',
       at + interval '9 days', false, 'rated', at, at - interval '1 hour'
FROM r;
SELECT setval(pg_get_serial_sequence('invitation', 'id'), {n} + 1);
"""),
    ("service_case", """
INSERT INTO service_case (id, org_id, reporter_org_id, case_no, item_code, item_name, region_code, staff_id,
                          service_channel, completed_at, batch_no, theme_no, invitation_id, request_hash, created_at)
SELECT i, 1000 + unit, 1000 + unit, 'C' || i, 'ITEM' || item, '事项' || item, region, staff, 'window',
       at - interval '1 hour', NULL, NULL, i, '', at - interval '1 hour'
FROM r;
SELECT setval(pg_get_serial_sequence('service_case', 'id'), {n} + 1);
"""),
    ("evaluation", """
INSERT INTO evaluation (id, invitation_id, case_id, scope, citizen_id, level, reason_codes, content, staff_id,
                        staff_level, channel, submitted_by_org_id, created_at)
SELECT i, i, i, 'all', NULL, level, (CASE level WHEN 1 THEN '[115, 110]' WHEN 2 THEN '[213]' ELSE '[]' END)::json, '',
       staff, NULL, channel, NULL, at
FROM r;
SELECT setval(pg_get_serial_sequence('evaluation', 'id'), {n} + 1);
"""),
    # A ticket for every bad review: a seventh still in progress, the rest resolved within 0-15 days and closed.
    ("ticket", """
INSERT INTO ticket (evaluation_id, invitation_id, case_id, citizen_id, region_code, level, responsibility,
                    approval_org_id, unit_org_id, assignee_org_id, status, category, received_at, due_at,
                    due_provisional, extension_working_days, redo_count, consultation, reply_text, resolved_at,
                    closed_at, created_at, updated_at, version)
SELECT i, i, i, NULL, region, level, 'handling', 100 + (unit % {counties} + 1), 1000 + unit, 1000 + unit,
       CASE WHEN i % 7 = 0 THEN 'in_progress' WHEN i % 5 = 0 THEN 'closed_no_answer' ELSE 'closed_satisfied' END,
       'general', at, at + interval '14 days', false, 0, 0, false, '已整改',
       CASE WHEN i % 7 = 0 THEN NULL ELSE at + ((i % 16) * interval '1 day') END,
       CASE WHEN i % 7 = 0 THEN NULL ELSE at + ((i % 16) * interval '1 day') + interval '2 days' END, at, at, 1
FROM r WHERE level <= 2 ORDER BY i;
"""),
    ("ticket_event", """
INSERT INTO ticket_event (ticket_id, at, actor_org_id, actor, action, from_status, to_status, note, data)
SELECT id, resolved_at, unit_org_id, 'unit', 'resolve', 'in_progress', 'resolved', '',
       json_build_object('rectification', '已按规定补正材料并电话致歉')
FROM ticket WHERE resolved_at IS NOT NULL ORDER BY id;
"""),
    # The roll-ups: one INSERT … SELECT per table, the set-based form of `gateway stats rebuild` (each rating here
    # has one case, no addendum and no ruling, so its facts are the columns of r).
    # The ticket roll-ups: working days from receipt to resolution read from the working calendar's running count
    # (table wd, written from gateway.tickets.calendar below).
    ("stats_ticket_daily", """
INSERT INTO stats_ticket_daily (day, region_code, unit_org_id, due, closed, on_time, called_back, answered, satisfied,
                                resolved, working_days)
SELECT (t.due_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, count(*),
       count(*) FILTER (WHERE t.status IN ('closed_satisfied', 'closed_unsatisfied', 'closed_no_answer')),
       count(*) FILTER (WHERE t.status IN ('closed_satisfied', 'closed_unsatisfied', 'closed_no_answer')
                          AND t.resolved_at <= t.due_at),
       count(*) FILTER (WHERE t.status IN ('closed_satisfied', 'closed_unsatisfied', 'closed_no_answer',
                                           'callback_unsatisfied') OR t.redo_count > 0),
       count(*) FILTER (WHERE t.status IN ('closed_satisfied', 'closed_unsatisfied', 'callback_unsatisfied')
                          OR t.redo_count > 0),
       count(*) FILTER (WHERE t.status = 'closed_satisfied'),
       count(t.resolved_at), coalesce(sum(res.running - rec.running), 0)
FROM ticket t JOIN invitation i ON i.id = t.invitation_id
     LEFT JOIN wd rec ON t.resolved_at IS NOT NULL
                     AND rec.day = (coalesce(t.received_at, t.resolved_at) AT TIME ZONE 'Asia/Shanghai')::date
     LEFT JOIN wd res ON res.day = (t.resolved_at AT TIME ZONE 'Asia/Shanghai')::date
WHERE NOT EXISTS (SELECT 1 FROM evaluation_decision d WHERE d.evaluation_id = t.evaluation_id)
GROUP BY 1, 2, 3;
"""),
    ("stats_ticket_monthly", """
INSERT INTO stats_ticket_monthly (day, region_code, unit_org_id, due, closed, on_time, called_back, answered, satisfied,
                                  resolved, working_days)
SELECT date_trunc('month', day)::date, region_code, unit_org_id, sum(due), sum(closed), sum(on_time), sum(called_back),
       sum(answered), sum(satisfied), sum(resolved), sum(working_days)
FROM stats_ticket_daily GROUP BY 1, 2, 3;
"""),
    ("stats_unit_daily", """
INSERT INTO stats_unit_daily (day, region_code, unit_org_id, level, status, n, staff_rated, staff_level_sum)
SELECT day, region, 1000 + unit, level, 'valid', count(*), 0, 0 FROM r GROUP BY 1, 2, 3, 4
UNION ALL
SELECT ((at - interval '1 hour') AT TIME ZONE 'Asia/Shanghai')::date, region, 1000 + unit, 0, 'invited', count(*), 0, 0
FROM r GROUP BY 1, 2, 3;
"""),
    ("stats_unit_monthly", """
INSERT INTO stats_unit_monthly (day, region_code, unit_org_id, level, status, n, staff_rated, staff_level_sum)
SELECT date_trunc('month', day)::date, region_code, unit_org_id, level, status, sum(n), 0, 0
FROM stats_unit_daily GROUP BY 1, 2, 3, 4, 5;
"""),
    ("stats_daily", """
INSERT INTO stats_daily (day, region_code, unit_org_id, item_code, staff_id, channel, level, status, n, staff_rated,
                         staff_level_sum)
SELECT day, region, 1000 + unit, 'ITEM' || item, staff, channel, level, 'valid', count(*), 0, 0
FROM r GROUP BY 1, 2, 3, 4, 5, 6, 7
UNION ALL
SELECT ((at - interval '1 hour') AT TIME ZONE 'Asia/Shanghai')::date, region, 1000 + unit, 'ITEM' || item, staff, '', 0,
       'invited', count(*), 0, 0
FROM r GROUP BY 1, 2, 3, 4, 5;
"""),
    ("stats_reason_daily", """
INSERT INTO stats_reason_daily (day, region_code, unit_org_id, item_code, staff_id, channel, level, status, code, n)
SELECT day, region, 1000 + unit, 'ITEM' || item, staff, channel, level, 'valid', code, count(*)
FROM r, unnest(CASE level WHEN 1 THEN ARRAY[115, 110] WHEN 2 THEN ARRAY[213] END) code
WHERE level <= 2 GROUP BY 1, 2, 3, 4, 5, 6, 7, 9;
"""),
]


async def _working_calendar(conn: asyncpg.Connection) -> None:
    """Table wd: every day of the seeded span and after, with the running count of working days up to it."""
    from datetime import date, timedelta

    from gateway.tickets.calendar import WorkingCalendar

    calendar, day, running, rows = WorkingCalendar(), date(2024, 11, 1), 0, []
    while day <= date(2027, 2, 1):
        running += 1 if calendar.is_working_day(day) else 0
        rows.append((day, running))
        day += timedelta(days=1)
    await conn.execute("CREATE TEMP TABLE wd (day date PRIMARY KEY, running int NOT NULL)")
    await conn.copy_records_to_table("wd", records=rows)


async def _seed(conn: asyncpg.Connection, n: int) -> dict[str, float]:
    """Load the store as fast as PostgreSQL allows and leave it as migrations made it: the loaded tables' foreign
    keys, unique constraints and secondary indexes are dropped first and created again after the load."""
    timings: dict[str, float] = {}
    args = {"counties": COUNTIES, "units": UNITS, "items": ITEMS, "days": DAYS, "n": n, "staff": STAFF_PER_UNIT,
            "start": "2024-12-01 00:00:00+08"}
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE contype IN ('f', 'u') AND conrelid::regclass::text = ANY($1::text[]) ORDER BY contype", list(LOADED))
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY($1::text[]) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u', 'x'))", list(LOADED))
    for c in constraints:
        await conn.execute(f'ALTER TABLE {c["tbl"]} DROP CONSTRAINT "{c["conname"]}"')
    for i in indexes:
        await conn.execute(f'DROP INDEX "{i["indexname"]}"')
    await conn.execute("SET maintenance_work_mem = '512MB'; SET work_mem = '256MB'")
    await conn.execute(ORGS_SQL.format(**args))
    await _working_calendar(conn)
    started = time.perf_counter()
    await conn.execute(RATINGS_SQL.format(**args))
    timings["ratings"] = time.perf_counter() - started
    for table, sql in TABLES_SQL:
        started = time.perf_counter()
        await conn.execute(sql.format(**args))
        timings[table] = time.perf_counter() - started
    started = time.perf_counter()
    for i in indexes:
        await conn.execute(i["indexdef"])
    for c in reversed(constraints):  # unique constraints before the foreign keys that may lean on them
        await conn.execute(f'ALTER TABLE {c["tbl"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}')
    timings["indexes and constraints"] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.execute("DROP TABLE r; DROP TABLE wd")
    await conn.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(conn: asyncpg.Connection, database: str) -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL backend serving the database, this connection's aside."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    return {p["pid"]: _cpu_seconds(p["pid"]) for p in pids}


async def _timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
    return (time.perf_counter() - started) * 1000


@asynccontextmanager
async def _database(reuse: str | None, keep: bool) -> AsyncIterator[str]:
    name = reuse or f"bench_stats_{uuid.uuid4().hex[:8]}"
    if reuse is None:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
    try:
        yield name
    finally:
        if not keep:
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        else:
            print(f"kept database {name}")


async def main(n: int, repeat: int, reuse: str | None, keep: bool, only: str | None) -> None:
    print(f"machine: {machine()}")
    async with _database(reuse, keep) as name:
        url = database_url(name)
        env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_SECRET_KEY": "bench-secret-key-0123456789-abcdef"}
        pg = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        if reuse is None:
            run(["migrate"], env)
            out = run(["org", "add", "--code", "city", "--name", "安康市行政审批服务局", "--kind", "city_bureau",
                       "--region", "610900"], env)
            Path(f"/tmp/{name}.key").write_text(out.strip().splitlines()[-1])
            conn = await asyncpg.connect(pg)
            print(f"load average before seeding: {Path('/proc/loadavg').read_text().strip()}")
            seeded = time.perf_counter()
            timings = await _seed(conn, n)
            print(f"seeded {n:,} evaluations in {time.perf_counter() - seeded:.0f} s ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ")")
            print(f"load average after seeding: {Path('/proc/loadavg').read_text().strip()}")
        else:
            conn = await asyncpg.connect(pg)
        sizes = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in LOADED}
        print("rows: " + ", ".join(f"{t} {c:,}" for t, c in sizes.items()))
        print(f"database size: {await conn.fetchval('SELECT pg_size_pretty(pg_database_size(current_database()))')}")
        key = Path(f"/tmp/{name}.key").read_text().strip()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env.update({"GATEWAY_PORT": str(port), "GATEWAY_RUN_DISPATCHER": "false", "GATEWAY_PUBLIC_STATS_TTL_SECONDS": "60"})
        auth = {"Authorization": f"Bearer {key}"}
        # The last full month and the last year of the seeded span (it ends 2026-11-30).
        cases = [
            ("/api/v1/stats month", "/api/v1/stats?period=month&date=2026-11-15", auth),
            ("/api/v1/stats year", "/api/v1/stats?from=2025-12-01&to=2026-11-30", auth),
            ("/api/v1/stats year by unit", "/api/v1/stats?from=2025-12-01&to=2026-11-30&group_by=unit", auth),
            ("/public/stats", "/public/stats?month=2026-11", {}),
        ]
        for label, path, headers in cases:
            if only and only not in label:
                continue
            process = gateway(["serve"], env)
            try:
                await wait_ready(base)
                async with aiohttp.ClientSession() as http:
                    cold = await _timed(http, base + path, headers)
                    cpu0, pg0 = _cpu_seconds(process.pid), await _backends(conn, name)
                    load0 = Path("/proc/loadavg").read_text().split()[0]
                    warm = [await _timed(http, base + path, headers) for _ in range(repeat)]
                    cpu = (_cpu_seconds(process.pid) - cpu0) / repeat * 1000
                    pg1 = await _backends(conn, name)
                    pg_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items()) / repeat * 1000
                    load1 = Path("/proc/loadavg").read_text().split()[0]
                q = percentiles(warm)
                print(f"{label:28s} cold {cold:7.1f} ms   warm p50 {q['p50']:6.1f} ms  p95 "
                      f"{sorted(warm)[int(0.95 * len(warm)) - 1]:6.1f} ms   gateway CPU {cpu:5.1f} ms/request   "
                      f"PostgreSQL CPU {pg_cpu:5.1f} ms/request   load {load0}-{load1}")
            finally:
                process.terminate()
                process.wait(timeout=30)
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--reuse", help="time the requests against a database kept by an earlier run (no seeding)")
    parser.add_argument("--keep", action="store_true", help="keep the database (drop it by hand when done)")
    parser.add_argument("--only", help="time only the requests whose label contains this text")
    args = parser.parse_args()
    asyncio.run(main(args.evaluations, args.repeat, args.reuse, args.keep, args.only))
