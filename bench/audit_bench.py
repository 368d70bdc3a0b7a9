"""Evaluation-log benchmark: what the log adds to a rating, and how fast `gateway audit verify` reads it.

On fresh PostgreSQL databases (named bench_audit_*, dropped afterwards):
  1. **Rating cost.** Open invitations are seeded set-based (INSERT … SELECT); then ratings are recorded
     through the real path (`invitation_by_token` + `record_rating`, one transaction each, one in ten a
     bad review that opens its ticket) at a fixed rate, in rounds alternating without and with the
     evaluation-log hook. Per round: the latency of each rating's transaction, this process's CPU per
     rating, the CPU of the PostgreSQL backends serving it per rating (from /proc), and the CPU and wall
     time spent inside the commit hook that appends (measured in the transaction itself). Then the same,
     one rating at a time (`--sequential`), where the hook's CPU is the log's alone. With `--procs N` the
     rounds' ratings come from N processes, each with its own pool offering rate/N from the same instant,
     as N serve processes would: their measures are combined (CPU and time in the hook summed over them). Then `--appends`
     appends alone through `evaluation_log_append`, one transaction each: that backend's CPU per append.
  2. **Verify speed.** A chain of N records is seeded (invitations by INSERT … SELECT; evaluations and
     their entries generated in order, each entry hashed as an append would, written by COPY), then
     `verify` reads it all with `--jobs` connections: records per second, the verifier's CPU and the
     backends' CPU per record. The real command line is run once too (`--no-cli` to skip it).

    flock /work/wt/bench.lock python bench/audit_bench.py --rate 500 --seconds 4 --rounds 2 --records 1000000
    python bench/audit_bench.py --rate 500 --procs 2 --seconds 6 --rounds 2 --sequential 0 --appends 0 --records 0
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, cpu_seconds, database_name, fresh_database, machine, percentiles, pg_connect  # noqa: E402
from gateway.audit import log as audit_log  # noqa: E402
from gateway.audit.verify import JOBS, verify  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.deps import Deps  # noqa: E402
from gateway.evaluations import records  # noqa: E402
from gateway.evaluations.service import invitation_by_token, record_rating  # noqa: E402
from gateway.orgs import add_org  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from gateway.store.db import Store  # noqa: E402
from gateway.store.migrate import upgrade  # noqa: E402

DB_PREFIX = os.environ.get("BENCH_AUDIT_DB_PREFIX", "bench_audit_")
ORGS = [
    ("city", "安康市行政审批服务局", "city_bureau", "610900", None),
    ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", "city"),
    ("hanbin-market", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
]


async def setup(url: str) -> Store:
    store = Store.connect(url, pool_size=16)
    await upgrade(store.engine)
    now = datetime.now(timezone.utc)
    async with store.transaction() as session:
        for code, name, kind, region, parent in ORGS:
            await add_org(session, code=code, name=name, kind=kind, region_code=region, parent_code=parent, at=now)
    return store


async def seed_invitations(url: str, n: int) -> None:
    """N open window-service invitations of 汉滨区市场监督管理局, each with its case."""
    conn = await pg_connect(url)
    try:
        unit = await conn.fetchval("SELECT id FROM organisation WHERE code = 'hanbin-market'")
        done = datetime.now(timezone.utc) - timedelta(hours=1)
        await conn.execute(
            """
            INSERT INTO invitation (id, token, org_id, kind, group_no, region_code, item_name, office_name,
                                    service_channel, completed_at, expires_at, expires_provisional, status, created_at)
            SELECT i, 'a' || lpad(i::text, 15, '0'), $1, 'single', 'AUDIT-' || i, '610902', '个体工商户设立登记',
                   '汉滨区市场监督管理局', 'window', $2::timestamptz, $2::timestamptz + interval '10 days', false, 'open', $2
            FROM generate_series(1, $3::int) AS i
            """,
            unit,
            done,
            n,
        )
        await conn.execute(
            """
            INSERT INTO service_case (id, org_id, reporter_org_id, case_no, item_code, item_name, region_code, staff_id,
                                      service_channel, completed_at, invitation_id, request_hash, created_at)
            SELECT i, $1, $1, 'AUDIT-' || i, '11610902MB0001', '个体工商户设立登记', '610902', 'HB-017', 'window',
                   $2::timestamptz, i, md5(i::text) || md5(i::text), $2
            FROM generate_series(1, $3::int) AS i
            """,
            unit,
            done,
            n,
        )
        for table in ("invitation", "service_case"):
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {n})")
    finally:
        await conn.close()


async def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of every backend connected to the benchmark's database."""
    conn = await pg_connect(url)
    try:
        name = database_name(url)
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await conn.close()
    return {r["pid"]: cpu for r in pids if (cpu := cpu_seconds(r["pid"])) is not None}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


class HookClock:
    """The CPU and wall time spent in the session's `before_commit` hooks (the log's append is the only
    one): a listener put first starts the clock, one put last stops it. Measured inside the rating's own
    transaction, so it is the log's cost alone, not a difference between two noisy rounds."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.calls = 0
        self._start: dict[int, tuple[float, float]] = {}
        event.listen(Session, "before_commit", self._begin, insert=True)
        event.listen(Session, "before_commit", self._end)

    def _begin(self, session: Session) -> None:
        self._start[id(session)] = (time.thread_time(), time.perf_counter())

    def _end(self, session: Session) -> None:
        cpu, wall = self._start.pop(id(session))
        self.cpu += time.thread_time() - cpu
        self.wall += time.perf_counter() - wall
        self.calls += 1

    def reset(self) -> None:
        self.cpu = self.wall = 0.0
        self.calls = 0


HOOK = HookClock()


async def append_alone(url: str, n: int) -> dict[str, Any]:
    """N appends of one typical record each, one transaction each, through evaluation_log_append on one
    connection: that backend's CPU per append (the function and its own commit) and the round trip."""
    conn = await pg_connect(url)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        record = audit_log.fast_canonical(
            {
                "case_id": 123456,
                "channel": "web",
                "citizen_id": 654321,
                "content": "同一份证明交了三次",
                "created_at": "2026-03-04T02:00:00.000000Z",
                "id": 0,
                "invitation_id": 123456,
                "level": 2,
                "reason_codes": [213],
                "scope": "all",
                "staff_id": "HB-017",
                "staff_level": 4,
                "submitted_by_org_id": None,
            }
        )
        now = datetime.now(timezone.utc)
        statement = await conn.prepare("SELECT head_seq FROM evaluation_log_append($1, $2, $3, $4)")
        load0 = _loadavg()
        cpu0, t0 = cpu_seconds(pid) or 0.0, time.perf_counter()
        for i in range(n):
            async with conn.transaction():
                await statement.fetchval(["evaluation"], [10**9 + i], [record], [now])
        elapsed, cpu = time.perf_counter() - t0, (cpu_seconds(pid) or 0.0) - cpu0
    finally:
        await conn.close()
    return {
        "appends": n,
        "wall_ms_per_append": round(elapsed / n * 1000, 3),
        "server_cpu_ms_per_append": round(cpu / n * 1000, 3),
        "loadavg_before_after": [load0, _loadavg()],
    }


async def rating_round(
    store: Store, deps: Deps, url: str, tokens: list[str], rate: float, logged: bool, concurrency: int = 16
) -> dict[str, Any]:
    load0 = _loadavg()
    server0 = await backend_cpu(url)
    part = await rate_ratings(store, deps, tokens, rate, logged, concurrency)
    return summary(logged, concurrency, [part], cpu_delta(server0, await backend_cpu(url)), load0)


async def rate_ratings(
    store: Store,
    deps: Deps,
    tokens: list[str],
    rate: float,
    logged: bool,
    concurrency: int = 16,
    begin: float | None = None,
) -> dict[str, Any]:
    """Records the ratings of `tokens` at `rate` a second, from `begin` (a `time.time()`; at once if None):
    this process's own measures, raw, for `summary` to combine."""
    original = audit_log.queue_record
    if not logged:
        records.queue_record = lambda *_args, **_kwargs: None  # type: ignore[assignment]
    try:
        # Warm the pool so every backend that serves the round exists before the CPU is read.
        await asyncio.gather(*(_ping(store) for _ in range(16)))
        if begin is not None:
            await asyncio.sleep(max(0.0, begin - time.time()))
        HOOK.reset()
        client0 = time.process_time()
        latencies: list[float] = []
        start = time.perf_counter()

        # At most as many ratings in flight as the pool has connections, as in a serve process; a rate the
        # machine cannot keep shows as a lower achieved rate.
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int, token: str) -> None:
            due = start + index / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with slots:
                t0 = time.perf_counter()
                async with store.transaction() as session:
                    invitation = await invitation_by_token(session, token)
                    bad = index % 10 == 0
                    await record_rating(
                        session,
                        invitation=invitation,
                        level=2 if bad else 5,
                        channel="web",
                        deps=deps,
                        reasons=[213] if bad else [],
                        staff_level=4,
                    )
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client0
    finally:
        records.queue_record = original  # type: ignore[assignment]
    return {
        "ratings": len(tokens),
        "seconds": elapsed,
        "latencies_ms": latencies,
        "cpu_s": client_cpu,
        "hook_cpu_s": HOOK.cpu,
        "hook_wall_s": HOOK.wall,
    }


def summary(
    logged: bool, concurrency: int, parts: list[dict[str, Any]], server_cpu: float, load0: str
) -> dict[str, Any]:
    """One round's figures from its processes' raw measures (`rate_ratings`) and the backends' CPU."""
    n = sum(p["ratings"] for p in parts)
    latencies = [ms for p in parts for ms in p["latencies_ms"]]
    p95 = statistics.quantiles(latencies, n=100, method="inclusive")[94]
    return {
        "log": logged,
        "procs": len(parts),
        "concurrency": concurrency,
        "ratings": n,
        "achieved_per_s": round(n / max(p["seconds"] for p in parts), 1),
        "mean_ms": round(statistics.fmean(latencies), 3),
        **{k: round(v, 3) for k, v in {**percentiles(latencies), "p95": p95}.items()},
        "gateway_cpu_ms_per_rating": round(sum(p["cpu_s"] for p in parts) / n * 1000, 3),
        "server_cpu_ms_per_rating": round(server_cpu / n * 1000, 3),
        "log_hook_cpu_ms_per_rating": round(sum(p["hook_cpu_s"] for p in parts) / n * 1000, 3),
        "log_hook_wall_ms_per_rating": round(sum(p["hook_wall_s"] for p in parts) / n * 1000, 3),
        "loadavg_before_after": [load0, _loadavg()],
    }


async def start_procs(url: str, procs: int) -> list[asyncio.subprocess.Process]:
    """`--procs` rating processes, each with its own pool (as serve processes would be)."""
    return [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            url,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=2**24,
        )
        for _ in range(procs)
    ]


async def procs_round(
    children: list[asyncio.subprocess.Process], url: str, tokens: list[str], rate: float, logged: bool
) -> dict[str, Any]:
    """One round spread over the rating processes: each offers rate/procs, all from the same instant. The
    backends' CPU is read around the whole round, once, for all of them."""
    load0 = _loadavg()
    server0 = await backend_cpu(url)
    begin = time.time() + 0.5
    for index, child in enumerate(children):
        share = tokens[index :: len(children)]
        command = {"tokens": share, "rate": rate / len(children), "log": logged, "begin": begin}
        assert child.stdin is not None
        child.stdin.write(json.dumps(command).encode() + b"\n")
        await child.stdin.drain()
    parts = []
    for child in children:
        assert child.stdout is not None
        line = await child.stdout.readline()
        if not line:
            raise RuntimeError("a rating process stopped: see its stderr above")
        parts.append(json.loads(line))
    return summary(logged, 16, parts, cpu_delta(server0, await backend_cpu(url)), load0)


async def child(url: str) -> None:
    """A rating process of `--procs`: reads a round a line on stdin, answers its raw measures on stdout."""
    store = Store.connect(url, pool_size=16)
    deps = Deps.build(bench_settings(url), SystemClock())
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = json.loads(line)
            part = await rate_ratings(
                store, deps, command["tokens"], command["rate"], command["log"], begin=command["begin"]
            )
            print(json.dumps(part), flush=True)
    finally:
        await store.close()


def bench_settings(url: str) -> Any:
    return load_settings(database_url=url, quiet_hours="", sms_provider="console", redis_url="")


async def _ping(store: Store) -> None:
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("SELECT pg_sleep(0.05)")


async def seed_chain(url: str, n: int, per_invitation: int = 100, batch: int = 20_000) -> float:
    """N evaluations and their log entries. The invitations are inserted set-based (one per hundred
    evaluations, a theme rated item by item); the evaluations are generated here, each entry's canonical
    text and hash computed in order as an append would, and both tables written by COPY, side by side."""
    t0 = time.perf_counter()
    conn, other = await pg_connect(url), await pg_connect(url)
    try:
        first = await conn.fetchval("SELECT coalesce(max(id), 0) FROM invitation") + 1
        seq = await conn.fetchval("SELECT seq FROM evaluation_log_head WHERE id = 1")
        prev = await conn.fetchval("SELECT hash FROM evaluation_log_head WHERE id = 1")
        next_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM evaluation") + 1
        unit = await conn.fetchval("SELECT id FROM organisation WHERE code = 'hanbin-market'")
        at = datetime(2026, 3, 4, 2, 0, tzinfo=timezone.utc)
        invitations = -(-n // per_invitation)
        await conn.execute(
            """
            INSERT INTO invitation (id, token, org_id, kind, group_no, region_code, item_name, office_name,
                                    service_channel, completed_at, expires_at, expires_provisional, status, rated_at,
                                    created_at)
            SELECT i, 'v' || lpad(i::text, 15, '0'), $1, 'theme', 'CHAIN-' || i, '610902', '个体工商户设立登记',
                   '汉滨区市场监督管理局', 'online', $2::timestamptz, $2::timestamptz + interval '10 days', false, 'rated', $2, $2
            FROM generate_series($3::int, $4::int) AS i
            """,
            unit,
            at,
            first,
            first + invitations - 1,
        )
        fields = audit_log.FIELDS["evaluation"]
        now = datetime.now(timezone.utc)
        for start in range(0, n, batch):
            evaluations: list[tuple[Any, ...]] = []
            entries: list[tuple[Any, ...]] = []
            for i in range(start, min(start + batch, n)):
                bad = i % 5 < 2
                values = {
                    "id": next_id + i,
                    "invitation_id": first + i // per_invitation,
                    "case_id": None,
                    "scope": f"item:{i % per_invitation}",
                    "citizen_id": None,
                    "level": 1 + i % 5,
                    "reason_codes": [213, 210] if bad else [],
                    "content": "同一份证明交了三次" if bad else "",
                    "staff_id": "HB-017" if i % 3 == 0 else None,
                    "staff_level": 4 if i % 3 == 0 else None,
                    "channel": "sms",
                    "submitted_by_org_id": None,
                    "created_at": at + timedelta(milliseconds=i),
                }
                evaluations.append(tuple(json.dumps(values[f]) if f == "reason_codes" else values[f] for f in fields))
                seq += 1
                text = audit_log.entry_text(
                    seq, "evaluation", audit_log.fast_canonical(audit_log.record_of("evaluation", values))
                )
                digest = hashlib.sha256(bytes.fromhex(prev) + text.encode()).hexdigest()
                entries.append((seq, "evaluation", values["id"], text, prev, digest, now))
                prev = digest
            await asyncio.gather(
                conn.copy_records_to_table("evaluation", records=evaluations, columns=list(fields)),
                other.copy_records_to_table(
                    "evaluation_log",
                    records=entries,
                    columns=["seq", "kind", "record_id", "record", "prev_hash", "hash", "created_at"],
                ),
            )
        await conn.execute("SELECT setval(pg_get_serial_sequence('evaluation', 'id'), $1)", next_id + n - 1)
        await conn.execute("SELECT setval(pg_get_serial_sequence('invitation', 'id'), $1)", first + invitations - 1)
        await conn.execute("UPDATE evaluation_log_head SET seq = $1, hash = $2 WHERE id = 1", seq, prev)
        await asyncio.gather(conn.execute("VACUUM ANALYZE evaluation_log"), other.execute("VACUUM ANALYZE evaluation"))
    finally:
        await conn.close()
        await other.close()
    return time.perf_counter() - t0


async def verify_speed(url: str, jobs: int = JOBS) -> dict[str, Any]:
    # The pool keeps every connection verify uses, so their backends' CPU is still there to be read.
    store = Store.connect(url, pool_size=jobs + 1)
    try:
        await asyncio.gather(*(_ping(store) for _ in range(jobs + 1)))
        load0 = _loadavg()
        server0, client0 = await backend_cpu(url), time.process_time()
        t0 = time.perf_counter()
        result = await verify(store.engine, jobs=jobs)
        elapsed = time.perf_counter() - t0
        client_cpu, server_cpu = time.process_time() - client0, cpu_delta(server0, await backend_cpu(url))
    finally:
        await store.close()
    if not result.ok:
        raise RuntimeError(result.summary())
    n = result.records
    return {
        "records": n,
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "records_per_s": round(n / elapsed),
        "verifier_cpu_us_per_record": round(client_cpu / n * 1e6, 2),
        "server_cpu_us_per_record": round(server_cpu / n * 1e6, 2),
        "loadavg_before_after": [load0, _loadavg()],
    }


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cli_verify(url: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify"],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "exit": done.returncode,
        "seconds": round(time.perf_counter() - t0, 2),
        "output": (done.stdout or done.stderr).strip(),
    }


async def ratings(args: argparse.Namespace, report: dict[str, Any]) -> None:
    per_round = int(args.rate * args.seconds)
    async with fresh_database(DB_PREFIX) as url:
        store = await setup(url)
        deps = Deps.build(bench_settings(url), SystemClock())
        await seed_invitations(url, (per_round + args.sequential) * args.rounds * 2 + 100)
        children = await start_procs(url, args.procs) if args.procs > 1 else []

        async def one_round(tokens: list[str], logged: bool) -> dict[str, Any]:
            if children:
                return await procs_round(children, url, tokens, args.rate, logged)
            return await rating_round(store, deps, url, tokens, args.rate, logged)

        # Warm-up: caches, prepared statements, the code paths.
        await one_round([f"a{i:015d}" for i in range(1, 101)], True)
        rounds = []
        next_token = 101
        for index in range(args.rounds * 2):
            tokens = [f"a{i:015d}" for i in range(next_token, next_token + per_round)]
            next_token += per_round
            rounds.append(await one_round(tokens, logged=index % 2 == 1))
            print(json.dumps(rounds[-1]), file=sys.stderr)
        for process in children:
            assert process.stdin is not None
            process.stdin.close()
            await process.wait()
        # One rating at a time: the log's own cost, without queueing behind other ratings.
        sequential = []
        for index in range(args.rounds * 2 if args.sequential > 0 else 0):
            tokens = [f"a{i:015d}" for i in range(next_token, next_token + args.sequential)]
            next_token += args.sequential
            sequential.append(await rating_round(store, deps, url, tokens, 1e9, logged=index % 2 == 1, concurrency=1))
            print(json.dumps(sequential[-1]), file=sys.stderr)
        await store.close()
        if args.appends > 0:
            report["append_alone"] = await append_alone(url, args.appends)
            print(json.dumps(report["append_alone"]), file=sys.stderr)
    report["rounds"], report["sequential"] = rounds, sequential
    report["added_per_rating"] = added(rounds)
    if sequential:
        report["added_per_rating_sequential"] = added(sequential)


def added(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of the rounds with the log minus mean of those without, per measure."""

    def mean(logged: bool, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["log"] == logged)

    keys = ("mean_ms", "p50", "p95", "p99", "gateway_cpu_ms_per_rating", "server_cpu_ms_per_rating")
    hook = ("log_hook_cpu_ms_per_rating", "log_hook_wall_ms_per_rating")
    return {key: round(mean(True, key) - mean(False, key), 3) for key in keys + hook}


async def verify_part(args: argparse.Namespace, report: dict[str, Any]) -> None:
    async with fresh_database(DB_PREFIX) as url:  # a log of its own: the rounds without the hook left records out of it
        await (await setup(url)).close()
        report["chain_seed_seconds"] = round(await seed_chain(url, args.records), 1)
        report["verify"] = await verify_speed(url, args.jobs)
        print(json.dumps(report["verify"]), file=sys.stderr)
        if args.cli:
            report["verify_cli"] = cli_verify(url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500, help="ratings per second")
    parser.add_argument("--procs", type=int, default=1, help="rating processes sharing --rate, a pool each")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a rating process of --procs, given the database
    parser.add_argument("--seconds", type=float, default=8, help="length of each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each kind, alternating (0: no ratings)")
    parser.add_argument("--sequential", type=int, default=300, help="ratings one at a time, per round")
    parser.add_argument("--appends", type=int, default=2000, help="appends alone, through the database function")
    parser.add_argument("--records", type=int, default=1_000_000, help="length of the chain verify reads (0: none)")
    parser.add_argument("--jobs", type=int, default=JOBS, help="verify's connections")
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True, help="also time the command")
    args = parser.parse_args()
    if args.child:
        await child(args.child)
        return
    report: dict[str, Any] = {"machine": machine(), "rate": args.rate, "procs": args.procs, "seconds": args.seconds}
    if args.rounds > 0:
        await ratings(args, report)
    if args.records > 0:
        await verify_part(args, report)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
