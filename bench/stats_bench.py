"""Statistics benchmark: GET /api/v1/stats for the whole city over a month and a year, and /public/stats,
warm (p50/p95 over repeated requests) and cold (the first request of a fresh gateway process), with the
gateway's CPU per request.

The store is seeded set-based in PostgreSQL (generate_series): organisations (300 units in 10 counties),
2,000 service items, N evaluations with their invitations and cases spread over two years, a ticket for
every bad review (most closed, some late), and the roll-ups. The roll-ups are filled with one INSERT …
SELECT per table, the set-based form of `gateway stats rebuild`; the gateway keeps the same rows up to date
rating by rating (tests/gateway/stats/test_rollup_property.py checks both agree). What is measured, the
statistics queries over the roll-ups and the tickets, is the path a deployment takes.

    .venv/bin/python -m bench.stats_bench --evaluations 2000000 [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.common import free_port, fresh_database, gateway, machine, percentiles, run, wait_ready

UNITS = 300
COUNTIES = 10
ITEMS = 2000
DAYS = 730
STAFF_PER_UNIT = 8

SEED_SQL = """
INSERT INTO organisation (id, code, name, kind, region_code, parent_id, created_at)
SELECT 100 + c, 'county-' || c, '第' || c || '区行政审批服务局', 'county_dept', '6109' || lpad((c + 1)::text, 2, '0'),
       NULL, now() FROM generate_series(1, {counties}) c;
INSERT INTO organisation (id, code, name, kind, region_code, parent_id, created_at)
SELECT 1000 + u, 'unit-' || u, '第' || u || '号承办单位', 'unit', '6109' || lpad((u % {counties} + 2)::text, 2, '0'),
       100 + (u % {counties} + 1), now() FROM generate_series(1, {units}) u;
SELECT setval(pg_get_serial_sequence('organisation', 'id'), 10000);

-- one invitation, one case and one evaluation per rating; rating i falls on day i % DAYS
CREATE TEMP TABLE r AS
SELECT i,
       1 + (i * 7919) % {items} AS item,
       timestamptz '{start}' + ((i % {days}) * interval '1 day') + ((i * 37) % 36000) * interval '1 second' AS at,
       CASE WHEN i % 100 < 85 THEN 5 WHEN i % 100 < 93 THEN 4 WHEN i % 100 < 97 THEN 3 WHEN i % 100 < 99 THEN 2 ELSE 1 END
         AS level,
       (ARRAY['web','sms','bot','qr','evaluator'])[1 + i % 5] AS channel,
       1 + (1 + (i * 7919) % {items}) % {units} AS unit
FROM generate_series(1::bigint, {n}) i;

INSERT INTO invitation (id, token, org_id, citizen_id, kind, group_no, region_code, item_name, office_name,
                        service_channel, completed_at, expires_at, expires_provisional, status, rated_at, created_at)
SELECT i, 'b' || i, 1000 + unit, NULL, 'single', 'C' || i, '6109' || lpad((unit % {counties} + 2)::text, 2, '0'),
       '事项' || item, '大厅', 'window', at - interval '1 hour', at + interval '9 days', false, 'rated', at, at - interval '1 hour'
FROM r;
INSERT INTO service_case (id, org_id, reporter_org_id, case_no, item_code, item_name, region_code, staff_id,
                          service_channel, completed_at, batch_no, theme_no, invitation_id, request_hash, created_at)
SELECT i, 1000 + unit, 1000 + unit, 'C' || i, 'ITEM' || item, '事项' || item,
       '6109' || lpad((unit % {counties} + 2)::text, 2, '0'), 'S' || unit || '-' || (i % {staff}), 'window',
       at - interval '1 hour', NULL, NULL, i, '', at - interval '1 hour'
FROM r;
INSERT INTO evaluation (id, invitation_id, case_id, scope, citizen_id, level, reason_codes, content, staff_id,
                        staff_level, channel, submitted_by_org_id, created_at)
SELECT i, i, i, 'all', NULL, level,
       (CASE level WHEN 1 THEN '[115, 110]' WHEN 2 THEN '[213]' ELSE '[]' END)::json, '', 'S' || unit || '-' || (i % {staff}),
       NULL, channel, NULL, at
FROM r;
INSERT INTO ticket (evaluation_id, invitation_id, case_id, citizen_id, region_code, level, responsibility,
                    approval_org_id, unit_org_id, assignee_org_id, status, category, received_at, due_at,
                    due_provisional, extension_working_days, redo_count, consultation, reply_text, resolved_at,
                    closed_at, created_at, updated_at, version)
SELECT i, i, i, NULL, '6109' || lpad((unit % {counties} + 2)::text, 2, '0'), level, 'handling', 100 + (unit % {counties} + 1),
       1000 + unit, 1000 + unit,
       CASE WHEN i % 7 = 0 THEN 'in_progress' WHEN i % 5 = 0 THEN 'closed_no_answer' ELSE 'closed_satisfied' END,
       'general', at, at + interval '14 days', false, 0, 0, false, '已整改',
       CASE WHEN i % 7 = 0 THEN NULL ELSE at + ((i % 16) * interval '1 day') END,
       CASE WHEN i % 7 = 0 THEN NULL ELSE at + ((i % 16) * interval '1 day') + interval '2 days' END, at, at, 1
FROM r WHERE level <= 2;
SELECT setval(pg_get_serial_sequence('invitation', 'id'), {n} + 1);
SELECT setval(pg_get_serial_sequence('service_case', 'id'), {n} + 1);
SELECT setval(pg_get_serial_sequence('evaluation', 'id'), {n} + 1);
"""

ROLLUP_SQL = """
INSERT INTO stats_unit_daily (day, region_code, unit_org_id, level, status, n, staff_rated, staff_level_sum)
SELECT (e.created_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, e.level, 'valid', count(*), 0, 0
FROM evaluation e JOIN invitation i ON i.id = e.invitation_id GROUP BY 1, 2, 3, 4
UNION ALL
SELECT (i.completed_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, 0, 'invited', count(*), 0, 0
FROM invitation i GROUP BY 1, 2, 3;
INSERT INTO stats_unit_monthly (day, region_code, unit_org_id, level, status, n, staff_rated, staff_level_sum)
SELECT date_trunc('month', day)::date, region_code, unit_org_id, level, status, sum(n), 0, 0
FROM stats_unit_daily GROUP BY 1, 2, 3, 4, 5;
INSERT INTO stats_daily (day, region_code, unit_org_id, item_code, staff_id, channel, level, status, n, staff_rated,
                         staff_level_sum)
SELECT (e.created_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, c.item_code, e.staff_id, e.channel,
       e.level, 'valid', count(*), 0, 0
FROM evaluation e JOIN invitation i ON i.id = e.invitation_id JOIN service_case c ON c.id = e.case_id
GROUP BY 1, 2, 3, 4, 5, 6, 7
UNION ALL
SELECT (i.completed_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, c.item_code, c.staff_id, '', 0,
       'invited', count(*), 0, 0
FROM invitation i JOIN service_case c ON c.invitation_id = i.id GROUP BY 1, 2, 3, 4, 5;
INSERT INTO stats_reason_daily (day, region_code, unit_org_id, item_code, staff_id, channel, level, status, code, n)
SELECT (e.created_at AT TIME ZONE 'Asia/Shanghai')::date, i.region_code, i.org_id, c.item_code, e.staff_id, e.channel,
       e.level, 'valid', code::text::int, count(*)
FROM evaluation e JOIN invitation i ON i.id = e.invitation_id JOIN service_case c ON c.id = e.case_id,
     json_array_elements(e.reason_codes) code
WHERE e.level <= 2 GROUP BY 1, 2, 3, 4, 5, 6, 7, 9;
ANALYZE;
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
    return (time.perf_counter() - started) * 1000


async def main(n: int, repeat: int) -> None:
    print(f"machine: {machine()}")
    async with fresh_database() as url:
        env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_SECRET_KEY": "bench-secret-key-0123456789-abcdef"}
        run(["migrate"], env)
        out = run(["org", "add", "--code", "city", "--name", "安康市行政审批服务局", "--kind", "city_bureau",
                   "--region", "610900"], env)
        key = out.strip().splitlines()[-1]
        pg = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(pg)
        start = "2024-12-01 00:00:00+08"
        seeded = time.perf_counter()
        await conn.execute(SEED_SQL.format(counties=COUNTIES, units=UNITS, items=ITEMS, days=DAYS, n=n, staff=STAFF_PER_UNIT,
                                           start=start))
        seed_s = time.perf_counter() - seeded
        rolled = time.perf_counter()
        await conn.execute(ROLLUP_SQL)
        rollup_s = time.perf_counter() - rolled
        sizes = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                 for t in ("evaluation", "ticket", "stats_unit_daily", "stats_unit_monthly", "stats_daily",
                           "stats_reason_daily")}
        await conn.close()
        print(f"seeded {n:,} evaluations in {seed_s:.0f} s, roll-ups in {rollup_s:.0f} s; rows: "
              + ", ".join(f"{t} {c:,}" for t, c in sizes.items()))
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
            process = gateway(["serve"], env)
            try:
                await wait_ready(base)
                async with aiohttp.ClientSession() as http:
                    cold = await _timed(http, base + path, headers)
                    cpu0 = _cpu_seconds(process.pid)
                    warm = [await _timed(http, base + path, headers) for _ in range(repeat)]
                    cpu = (_cpu_seconds(process.pid) - cpu0) / repeat * 1000
                q = percentiles(warm)
                print(f"{label:28s} cold {cold:7.1f} ms   warm p50 {q['p50']:6.1f} ms  p95 "
                      f"{sorted(warm)[int(0.95 * len(warm)) - 1]:6.1f} ms   gateway CPU {cpu:5.1f} ms/request")
            finally:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.evaluations, args.repeat))
