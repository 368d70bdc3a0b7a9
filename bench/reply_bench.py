"""A citizen's whole path, measured from outside: cases reported, prompts sent, replies answered.

On a fresh PostgreSQL database with Redis, the Twilio provider pointed at the fake Twilio server in
this process, and real gateway processes (`--layout single`: one `gateway serve` that also drains and
sends, the default deployment; `--layout split`: `gateway serve` without the dispatcher plus one
`gateway worker`):

1. **Cases.** N cases are reported through `POST /api/v1/cases` (online services, each citizen a new
   number), C requests at a time, with a unit's API key, as a department's system does it. Measured:
   cases per second, the gateway processes' CPU per case and the PostgreSQL backends' CPU per case;
   then the time until every prompt has reached the fake Twilio.
2. **Replies.** Each citizen answers its prompt with a signed Twilio webhook (`5`, or with `--bad` a
   `1` and then the first reason, which opens a work order), R webhooks at a time. A reply is
   finished when the gateway's answer to it has reached the fake Twilio. Measured: replies finished
   per second (from the first webhook to the last answer), the gateway's CPU per reply (all its
   processes) and PostgreSQL's, and the webhooks' latency.

Nothing is seeded around the gateway: the citizens, invitations and prompts come from the same code
a department's report goes through. Redis's own CPU is not counted (the server is shared).

    python bench/reply_bench.py --citizens 3000 --layout single
    python bench/reply_bench.py --citizens 1000 --layout split --bad
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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REDIS_URL,
    SECRET,
    PhaseProfile,
    cpu_seconds,
    database_name,
    flush_redis,
    free_port,
    fresh_database,
    gateway,
    machine,
    percentiles,
    pg_connect,
    run,
    wait_ready,
)
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, inbound_sms_params, signed_form  # noqa: E402


def phone(i: int) -> str:
    return f"+86137{i:08d}"


def backends(db_name: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database (from /proc)."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("postgres: ") and f" {db_name} " in cmdline:
            cpu = cpu_seconds(int(entry.name))
            if cpu is not None:
                out[int(entry.name)] = cpu
    return out


class Meter:
    """CPU of the gateway processes and of the database's backends between start() and stop()."""

    def __init__(self, pids: list[int], db_name: str) -> None:
        self.pids, self.db_name = pids, db_name

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.each0 = [cpu_seconds(p) or 0.0 for p in self.pids]
        self.gw0 = sum(self.each0)
        self.pg0 = backends(self.db_name)
        self.own0 = time.process_time()

    def stop(self, n: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        gw = sum(cpu_seconds(p) or 0.0 for p in self.pids) - self.gw0
        pg_now = backends(self.db_name)
        pg = sum(cpu - self.pg0.get(pid, 0.0) for pid, cpu in pg_now.items())
        return {
            "seconds": round(elapsed, 2),
            "per_second": round(n / elapsed, 1),
            "gateway_cpu_ms_per_op": round(1000 * gw / n, 2),
            "postgres_cpu_ms_per_op": round(1000 * pg / n, 2),
            "gateway_cpu_percent": round(100 * gw / elapsed, 1),
            # The benchmark's own process (the clients and the fake Twilio): near 100 % it is the limit.
            "bench_cpu_percent": round(100 * (time.process_time() - self.own0) / elapsed, 1),
            # Each gateway process (serve, then worker with --layout split), CPU ms per operation.
            "cpu_ms_per_op_by_process": [
                round(1000 * ((cpu_seconds(p) or 0.0) - c0) / n, 2) for p, c0 in zip(self.pids, self.each0, strict=True)
            ],
        }


def case(i: int, completed_at: str) -> dict[str, object]:
    return {
        "case_no": f"RB-{i:08d}",
        "item_code": "11610902MB0001",
        "item_name": "个体工商户设立登记",
        "org_code": "unit",
        "region_code": "610902",
        "service_channel": "online",
        "completed_at": completed_at,
        "citizen": {"phone": phone(i)},
    }


def received_per_number(fake: FakeTwilio) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in fake.received:
        if r.sid is not None:
            to = r.form.get("To", "")
            counts[to] = counts.get(to, 0) + 1
    return counts


async def wait_for(fake: FakeTwilio, numbers: list[str], count: int, timeout: float) -> float:
    """Until every number has received `count` messages; the time it took."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        counts = received_per_number(fake)
        if all(counts.get(n, 0) >= count for n in numbers):
            return time.perf_counter() - t0
        await asyncio.sleep(0.1)
    counts = received_per_number(fake)
    short = sum(1 for n in numbers if counts.get(n, 0) < count)
    raise RuntimeError(f"{short} of {len(numbers)} numbers had fewer than {count} messages after {timeout} s")


async def reply_all(url: str, numbers: list[str], body: str, sid_prefix: str, concurrency: int, fake: FakeTwilio,
                    expect: int) -> list[float]:
    """Each number sends `body`; returns the webhook latencies once every answer has reached the fake."""
    latencies: list[float] = []
    queue = iter(numbers)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            for number in queue:
                params = inbound_sms_params(from_=number, body=body, message_sid=f"SM{sid_prefix}{number[-8:]}".ljust(34, "0"))
                headers, data = signed_form(f"{url}/webhooks/twilio/sms", params, AUTH_TOKEN)
                t0 = time.perf_counter()
                async with session.post(f"{url}/webhooks/twilio/sms", data=data, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"webhook {resp.status}")
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    await wait_for(fake, numbers, expect, timeout=600)
    return latencies


async def redis_footprint(conversations: int) -> dict[str, object]:
    """The keys in the benchmark's Redis database by prefix, and their bytes (MEMORY USAGE) per open
    conversation. The database is the benchmark's own, flushed at the start."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    by_prefix: dict[str, list[int]] = {}
    try:
        async for key in client.scan_iter(count=1000):
            prefix = ":".join(key.decode().split(":")[:3])
            by_prefix.setdefault(prefix, [0, 0])
            by_prefix[prefix][0] += 1
            by_prefix[prefix][1] += int(await client.memory_usage(key, samples=0) or 0)
    finally:
        await client.aclose()
    total = sum(b for _, b in by_prefix.values())
    return {"keys": {k: {"count": c, "bytes": b} for k, (c, b) in sorted(by_prefix.items())},
            "bytes_per_open_conversation": round(total / conversations, 1)}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def ms(values: list[float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in percentiles(values).items()}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--citizens", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200, help="citizens through the whole path before measuring")
    parser.add_argument("--layout", choices=["single", "split"], default="single")
    parser.add_argument("--case-concurrency", type=int, default=16)
    parser.add_argument("--reply-concurrency", type=int, default=64)
    parser.add_argument("--bad", action="store_true", help="reply 1 and a reason (a work order each) instead of 5")
    args = parser.parse_args()
    n, warm = args.citizens, args.warmup

    await flush_redis()
    async with FakeTwilio() as fake, fresh_database() as db:
        db_name = database_name(db)
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {
            "GATEWAY_DATABASE_URL": db, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_PUBLIC_URL": public, "GATEWAY_PORT": str(port),
            "GATEWAY_SECRET_KEY": SECRET, "GATEWAY_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER, "TWILIO_API_BASE": fake.url,
            "GATEWAY_QUIET_HOURS": "", "GATEWAY_SMS_RATE_PER_SECOND": "100000", "GATEWAY_DISPATCH_BATCH_SIZE": "200",
        }
        run(["migrate"], env)
        run(["org", "add", "--code", "hanbin", "--name", "汉滨区行政审批服务局", "--kind", "county_dept", "--region", "610902"], env)
        added = run(["org", "add", "--code", "unit", "--name", "汉滨区市场监督管理局", "--kind", "unit", "--region", "610902",
                     "--parent", "hanbin"], env)
        key = added.strip().splitlines()[-1].strip()
        processes: list[subprocess.Popen[bytes]] = []
        if args.layout == "single":
            processes.append(gateway(["serve"], env))
        else:
            processes.append(gateway(["serve"], {**env, "GATEWAY_RUN_DISPATCHER": "false"}))
            processes.append(gateway(["worker"], env))
        try:
            await wait_ready(public)
            await asyncio.sleep(2)
            meter = Meter([p.pid for p in processes], db_name)
            profile = PhaseProfile()  # BENCH_PYSPY_PHASE=cases|replies: py-spy over the measured round's phase

            async def one_round(first: int, count: int, measured: bool = True) -> dict[str, object]:
                numbers = [phone(i) for i in range(first, first + count)]
                pids = [p.pid for p in processes] if measured else []
                profile.start("cases", pids)
                meter.start()
                case_lat = await report_cases_from(public, key, first, count, args.case_concurrency)
                cases = meter.stop(count)
                profile.stop()
                prompts_after = await wait_for(fake, numbers, 1, timeout=600)
                profile.start("replies", pids)
                meter.start()
                redis_state: dict[str, object] | None = None
                if args.bad:
                    lat = await reply_all(public, numbers, "1", "a", args.reply_concurrency, fake, 2)
                    redis_state = await redis_footprint(count)  # each conversation now waits for reasons
                    lat += await reply_all(public, numbers, "1", "b", args.reply_concurrency, fake, 3)
                else:
                    lat = await reply_all(public, numbers, "5", "a", args.reply_concurrency, fake, 2)
                replies = meter.stop(count)
                profile.stop()
                return {"cases": {**cases, "request_ms": ms(case_lat), "all_prompts_sent_after_s": round(prompts_after, 2)},
                        "replies": {**replies, "webhook_ms": ms(lat)}, "redis_while_waiting_for_reasons": redis_state,
                        "gateway_rss_mb": [rss_mb(p.pid) for p in processes]}

            await one_round(90_000_000, warm, measured=False)  # warm-up: connections, caches, statistics
            measured = await one_round(1, n)
            conn = await pg_connect(db)
            try:
                tickets = await conn.fetchval("SELECT count(*) FROM ticket")
                evaluations = await conn.fetchval("SELECT count(*) FROM evaluation")
            finally:
                await conn.close()
        finally:
            for p in processes:
                p.send_signal(signal.SIGINT)
            for p in processes:
                p.wait(timeout=60)
        result = {
            "machine": machine(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "layout": args.layout,
            "citizens": n,
            "kind": "bad (1, then a reason: a work order each)" if args.bad else "good (5)",
            **measured,
            "evaluations": evaluations,
            "tickets": tickets,
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))


async def report_cases_from(url: str, key: str, first: int, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    completed_at = (datetime.now(timezone.utc) - timedelta(minutes=30)).isoformat()
    numbers = iter(range(first, first + count))
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            for i in numbers:
                t0 = time.perf_counter()
                async with session.post(f"{url}/api/v1/cases", json=case(i, completed_at), headers=headers) as resp:
                    body = await resp.read()
                    if resp.status != 201:
                        raise RuntimeError(f"case {i}: {resp.status} {body[:300]!r}")
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
