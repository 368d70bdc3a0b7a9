"""Case intake and dispatcher benchmark: cases/s and server CPU per case, messages/s and worker CPU per message.

Each part runs against a real `gateway serve` / `gateway worker` process on a fresh PostgreSQL database
with Redis, over real HTTP. `--before DIR` runs the same parts with the code of another checkout (e.g.
the main branch) in the same run, for a before/after comparison on the same machine:

  cases, single: C concurrent department clients post `POST /api/v1/cases`, one case per request, each
      with its own citizen (the citizen is created, the invitation, the statistics and the SMS prompt
      queued, as in production);
  cases, bulk: the same cases sent with `POST /api/v1/cases/batch`, B per request, K requests at once
      (only where the code has the endpoint);
  dispatcher: M prompts queued through the department API (the bulk endpoint) are sent by one
      `gateway worker` through the real twilio SDK to a fake Twilio in a process of its own, with the
      SMS rate limit at --rate; the fake records when each message arrived, which gives the observed
      rate. A second run with --rate-open (a limit far above the rate reached) shows what one worker
      can send.

CPU is read from /proc/<pid>/stat (user + system) of the gateway process and of the PostgreSQL backends
serving its database, before and after each part; the load average is printed beside it.

    flock /work/wt/bench.lock python bench/intake_bench.py --before /work/main --single 2000 --bulk 20000 \\
        --messages 20000 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PG_ADMIN, SECRET, cpu_seconds, database_url, free_port, machine, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench_intake_")
ORGS = [
    ("ankang", "安康市行政审批服务局", "city_bureau", "610900", None),
    ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", None),
    ("unit", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def db_url(name: str) -> str:
    return database_url(name)


async def backend_cpu(name: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the database (but this one)."""
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return {r["pid"]: cpu_seconds(r["pid"]) or 0.0 for r in pids}


class Meter:
    """Wall time, CPU of the gateway process and of its database backends, load average."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid, self.name = pid, name

    async def __aenter__(self) -> Meter:
        self.load0 = loadavg()
        self.pg0 = await backend_cpu(self.name)
        self.cpu0 = cpu_seconds(self.pid) or 0.0
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = (cpu_seconds(self.pid) or 0.0) - self.cpu0
        pg1 = await backend_cpu(self.name)
        self.pg = sum(v - self.pg0.get(pid, 0.0) for pid, v in pg1.items())
        self.load1 = loadavg()

    def report(self, n: int, what: str) -> dict[str, Any]:
        return {
            f"{what}": n,
            "seconds": round(self.wall, 2),
            f"{what}_per_second": round(n / self.wall, 1),
            f"gateway_cpu_ms_per_{what[:-1]}": round(1000 * self.cpu / n, 3),
            f"postgres_cpu_ms_per_{what[:-1]}": round(1000 * self.pg / n, 3),
            f"server_cpu_ms_per_{what[:-1]}": round(1000 * (self.cpu + self.pg) / n, 3),
            "loadavg_before": self.load0,
            "loadavg_after": self.load1,
        }


def spawn(code: Path, command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "GATEWAY_LOG_LEVEL": "WARNING", **env}
    prefix: list[str] = []
    profile = os.environ.get("BENCH_PYSPY_DIR")
    if profile:
        fmt = os.environ.get("BENCH_PYSPY_FORMAT", "speedscope")  # or raw: collapsed stacks, one a line
        prefix = ["py-spy", "record", "--format", fmt, "-o", f"{profile}/{log_name}.{fmt}", "--"]
    log = open(f"/tmp/intake-bench-{log_name}.log", "wb")  # noqa: SIM115 (kept open for the child)
    return subprocess.Popen([*prefix, sys.executable, "-m", "gateway", *command], cwd=code, env=full,
                            stdout=log, stderr=subprocess.STDOUT)


def cli(code: Path, command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway", *command], cwd=code, env={**os.environ, **env},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def gateway_pid(process: subprocess.Popen[bytes]) -> int:
    """The Python process itself (under py-spy the child of the spawned process)."""
    if not os.environ.get("BENCH_PYSPY_DIR"):
        return process.pid
    for _ in range(50):
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        if children.exists() and children.read_text().split():
            return int(children.read_text().split()[0])
        time.sleep(0.1)
    return process.pid


def base_env(name: str, fake_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

    return {
        "GATEWAY_DATABASE_URL": db_url(name), "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_SECRET_KEY": SECRET,
        "GATEWAY_PUBLIC_URL": "https://pj.example.gov.cn", "GATEWAY_QUIET_HOURS": "",
        "GATEWAY_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER, "TWILIO_API_BASE": fake_url,
    }


def register(code: Path, env: dict[str, str]) -> str:
    cli(code, ["migrate"], env)
    key = ""
    for org_code, org_name, kind, region, parent in ORGS:
        out = cli(code, ["org", "add", "--code", org_code, "--name", org_name, "--kind", kind, "--region", region,
                         *(["--parent", parent] if parent else [])], env)
        key = out.strip().splitlines()[-1]
    return key  # the unit's key


async def flush_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


def case(n: int, prefix: str) -> dict[str, Any]:
    done = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    return {
        "case_no": f"{prefix}-{n}", "item_code": "11610902MB0001", "item_name": "个体工商户设立登记",
        "org_code": "unit", "region_code": "610902", "service_channel": "window", "staff_id": f"HB-{n % 40:03d}",
        "completed_at": done, "citizen": {"phone": f"+86139{n:08d}", "name": "张三"},
    }


async def post_single(url: str, key: str, numbers: list[int], concurrency: int, prefix: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    queue = list(numbers)
    created = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal created
        while queue:
            n = queue.pop()
            async with session.post(f"{url}/api/v1/cases", json=case(n, prefix), headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"case {n}: HTTP {resp.status}")
                created += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return created


async def post_bulk(url: str, key: str, numbers: list[int], batch: int, concurrency: int, prefix: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [json.dumps({"cases": [case(n, prefix) for n in numbers[i:i + batch]]}).encode()
              for i in range(0, len(numbers), batch)]
    created = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal created
        while bodies:
            body = bodies.pop()
            async with session.post(f"{url}/api/v1/cases/batch", data=body,
                                    headers={**headers, "Content-Type": "application/json"}) as resp:
                answer = await resp.json()
                if resp.status != 200 or answer["refused"]:
                    raise RuntimeError(f"batch: HTTP {resp.status} {str(answer)[:300]}")
                created += answer["created"]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return created


async def count(name: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url(name, driver=False))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def cases_part(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Single and (where the code has it) bulk intake on one fresh database."""
    out: dict[str, Any] = {"code": str(code)}
    async with database() as name:
        await flush_redis()
        env = {**base_env(name), "GATEWAY_RUN_DISPATCHER": "false"}
        key = register(code, env)
        port = free_port()
        server = spawn(code, ["serve", "--port", str(port)], env, f"serve-{code.name}")
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(url)
            await post_single(url, key, list(range(1, 51)), 4, "WARM")  # connections opened, code paths warm
            pid = gateway_pid(server)
            if args.single:
                async with Meter(pid, name) as meter:
                    created = await post_single(url, key, list(range(1000, 1000 + args.single)), args.concurrency, "S")
                out["single"] = {"concurrency": args.concurrency, **meter.report(created, "cases")}
                print(json.dumps({"single": out["single"]}), flush=True)
            if args.bulk:
                async with aiohttp.ClientSession() as probe:
                    async with probe.post(f"{url}/api/v1/cases/batch", json={"cases": []}) as resp:
                        has_bulk = resp.status != 404
                if has_bulk:
                    numbers = list(range(1_000_000, 1_000_000 + args.bulk))
                    async with Meter(pid, name) as meter:
                        created = await post_bulk(url, key, numbers, args.batch, args.bulk_concurrency, "B")
                    out["bulk"] = {"batch": args.batch, "concurrency": args.bulk_concurrency,
                                   **meter.report(created, "cases")}
                    print(json.dumps({"bulk": out["bulk"]}), flush=True)
            out["rows"] = {
                "service_case": await count(name, "SELECT count(*) FROM service_case"),
                "invitation": await count(name, "SELECT count(*) FROM invitation"),
                "prompts_queued": await count(name, "SELECT count(*) FROM outbound_message WHERE purpose = 'prompt'"),
                "citizen": await count(name, "SELECT count(*) FROM citizen"),
            }
        finally:
            stop(server)
    return out


# --- the dispatcher -----------------------------------------------------------------------------------


def fake_twilio_main(port_file: str, times_file: str) -> None:
    """Child process: the fake Twilio until SIGTERM, then the arrival times of what it created."""
    from tests.fakes.twilio_api import FakeTwilio

    async def main() -> None:
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with FakeTwilio() as fake:
            Path(port_file).write_text(fake.url)
            await stopping.wait()
            Path(times_file).write_text(json.dumps([r.at.timestamp() for r in fake.sent]))

    asyncio.run(main())


def observed(times: list[float]) -> dict[str, Any]:
    """The rate at the fake: overall, and the busiest calendar second and sliding second."""
    if len(times) < 2:
        return {"arrived": len(times)}
    times.sort()
    per_second: dict[int, int] = {}
    for t in times:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    full = [n for s, n in per_second.items() if s not in (int(times[0]), int(times[-1]))]  # whole seconds only
    j = 0
    sliding = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        sliding = max(sliding, i - j + 1)
    return {
        "arrived": len(times),
        "observed_per_second": round((len(times) - 1) / (times[-1] - times[0]), 1),
        "busiest_whole_second": max(full) if full else None,
        "mean_whole_second": round(sum(full) / len(full), 1) if full else None,
        "busiest_sliding_second": sliding,
    }


async def dispatch_part(code: Path, seeded: str, args: argparse.Namespace, rate: float, label: str) -> dict[str, Any]:
    """One worker of `code` sends a copy of the seeded backlog to a fake Twilio in its own process."""
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{seeded}"')
    await admin.close()
    port_file, times_file = f"/tmp/intake-bench-fake-{name}.url", f"/tmp/intake-bench-fake-{name}.json"
    fake = subprocess.Popen([sys.executable, __file__, "--fake-twilio", port_file, times_file], cwd=ROOT)
    try:
        for _ in range(100):
            if Path(port_file).exists() and Path(port_file).read_text():
                break
            await asyncio.sleep(0.1)
        await flush_redis()
        env = {**base_env(name, Path(port_file).read_text()), "GATEWAY_SMS_RATE_PER_SECOND": str(rate),
               "GATEWAY_DISPATCH_BATCH_SIZE": str(args.dispatch_batch)}
        total = await count(name, "SELECT count(*) FROM outbound_message WHERE status = 'queued'")
        worker = spawn(code, ["worker"], env, f"worker-{label}")
        try:
            pid = gateway_pid(worker)
            sent_sql = "SELECT count(*) FROM outbound_message WHERE status = 'sent'"
            started = 0
            for _ in range(600):  # the worker's start-up (imports, connections) is not measured
                started = await count(name, sent_sql)
                if started:
                    break
                await asyncio.sleep(0.05)
            sent = started
            deadline = time.monotonic() + args.dispatch_seconds
            async with Meter(pid, name) as meter:
                while time.monotonic() < deadline and sent < total:
                    await asyncio.sleep(0.1)
                    sent = await count(name, sent_sql)
            attempts = await count(name, "SELECT count(*) FROM delivery_attempt")
        finally:
            stop(worker)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=60)
        times = json.loads(Path(times_file).read_text()) if Path(times_file).exists() else []
        for f in (port_file, times_file):
            Path(f).unlink(missing_ok=True)
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    result = {"code": str(code), "rate_limit": rate, "queued": total, "recorded_sent": sent,
              "delivery_attempts": attempts, "measured_from_sent": started,
              **meter.report(max(1, sent - started), "messages"), **observed(times)}
    if "observed_per_second" in result:
        result["observed_vs_limit"] = round(result["observed_per_second"] / rate, 4)
    print(json.dumps({label: result}), flush=True)
    return result


async def seed_backlog(args: argparse.Namespace, name: str) -> None:
    """M prompts queued the way a department's report queues them: through the bulk endpoint."""
    await flush_redis()
    env = {**base_env(name), "GATEWAY_RUN_DISPATCHER": "false"}
    key = register(ROOT, env)
    port = free_port()
    server = spawn(ROOT, ["serve", "--port", str(port)], env, "serve-seed")
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        numbers = list(range(5_000_000, 5_000_000 + args.messages))
        await post_bulk(f"http://127.0.0.1:{port}", key, numbers, 1000, 2, "D")
    finally:
        stop(server)


async def main(args: argparse.Namespace) -> None:
    print(json.dumps({"machine": machine(), "loadavg": loadavg(), "args": vars(args)}), flush=True)
    trees = ([("before", Path(args.before))] if args.before else []) + [("after", ROOT)]
    results: dict[str, Any] = {}
    if args.single or args.bulk:
        for label, code in trees:
            results[f"cases_{label}"] = await cases_part(code, args)
    if args.messages:
        async with database() as seeded:
            await seed_backlog(args, seeded)
            for label, code in trees:
                results[f"dispatch_{label}"] = await dispatch_part(code, seeded, args, args.rate, f"dispatch_{label}")
            if args.rate_open:
                results["dispatch_after_open"] = await dispatch_part(
                    ROOT, seeded, args, args.rate_open, "dispatch_after_open"
                )
    print(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fake-twilio":
        fake_twilio_main(sys.argv[2], sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a checkout whose code runs first, as the baseline (e.g. /work/main)")
    parser.add_argument("--single", type=int, default=2000, help="cases posted one per request")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients for single cases")
    parser.add_argument("--bulk", type=int, default=20000, help="cases posted with the bulk endpoint")
    parser.add_argument("--batch", type=int, default=500, help="cases per bulk request")
    parser.add_argument("--bulk-concurrency", type=int, default=2, help="bulk requests at once")
    parser.add_argument("--messages", type=int, default=20000, help="prompts the dispatcher sends")
    parser.add_argument("--rate", type=float, default=1000.0, help="GATEWAY_SMS_RATE_PER_SECOND of the worker")
    parser.add_argument("--rate-open", type=float, default=0.0, help="a second run with this (high) rate limit")
    parser.add_argument("--dispatch-batch", type=int, default=500, help="GATEWAY_DISPATCH_BATCH_SIZE of the worker")
    parser.add_argument("--dispatch-seconds", type=float, default=120.0, help="longest a dispatcher run may take")
    asyncio.run(main(parser.parse_args()))
