"""A worker draining a large backlog of replies: its memory (RSS) while it works through it.

On a fresh PostgreSQL database with Redis and the fake Twilio in this process:

1. `gateway serve` with the dispatcher and the inbox drainer off (intake only) takes N cases through
   `POST /api/v1/cases/batch` (each a new citizen) and then N signed Twilio webhooks `5`, one per
   citizen: the inbox holds N pending replies, the outbox N prompts.
2. One `gateway worker` starts and drains it all: every reply processed (a rating each) and every
   prompt and answer sent to the fake Twilio. Every second the benchmark reads the worker's RSS, the
   inbox backlog and the messages the fake has received.

Printed: the RSS after each tenth of the backlog, its minimum, maximum and the rise from the first
tenth to the last, the replies per second and the worker's CPU per reply.

    python bench/backlog_bench.py --replies 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REDIS_URL,
    SECRET,
    cpu_seconds,
    flush_redis,
    free_port,
    fresh_database,
    gateway,
    machine,
    pg_connect,
    run,
    wait_ready,
)
from bench.reply_bench import phone, rss_mb  # noqa: E402
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, inbound_sms_params, signed_form  # noqa: E402


def case(i: int, completed_at: str) -> dict[str, object]:
    return {
        "case_no": f"BL-{i:08d}",
        "item_code": "11610902MB0001",
        "item_name": "个体工商户设立登记",
        "org_code": "unit",
        "region_code": "610902",
        "service_channel": "online",
        "completed_at": completed_at,
        "citizen": {"phone": phone(i)},
    }


async def report_all(url: str, key: str, n: int, batch: int = 500, concurrency: int = 2) -> None:
    completed_at = (datetime.now(timezone.utc) - timedelta(minutes=30)).isoformat()
    bodies = [json.dumps({"cases": [case(i, completed_at) for i in range(s, min(n, s + batch))]}).encode()
              for s in range(0, n, batch)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def client() -> None:
            while bodies:
                body = bodies.pop()
                async with session.post(f"{url}/api/v1/cases/batch", data=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status != 200 or answer["refused"]:
                        raise RuntimeError(f"batch: HTTP {resp.status} {str(answer)[:300]}")

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def reply_all(url: str, n: int, concurrency: int = 64) -> None:
    numbers = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            for i in numbers:
                params = inbound_sms_params(from_=phone(i), body="5", message_sid=f"SMBL{i:030d}")
                headers, data = signed_form(f"{url}/webhooks/twilio/sms", params, AUTH_TOKEN)
                async with session.post(f"{url}/webhooks/twilio/sms", data=data, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"webhook {resp.status}")

        await asyncio.gather(*(sender() for _ in range(concurrency)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=100_000)
    args = parser.parse_args()
    n = args.replies

    await flush_redis()
    async with FakeTwilio() as fake, fresh_database("gw_bench_backlog_") as db:
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
        serve = gateway(["serve"], {**env, "GATEWAY_RUN_DISPATCHER": "false"})
        worker = None
        try:
            await wait_ready(public)
            t0 = time.perf_counter()
            await report_all(public, key, n)
            t_cases = time.perf_counter() - t0
            t0 = time.perf_counter()
            await reply_all(public, n)
            t_replies = time.perf_counter() - t0
            conn = await pg_connect(db)
            try:
                pending = await conn.fetchval("SELECT count(*) FROM inbound_message WHERE state = 'pending'")
                print(f"backlog ready: {pending} replies pending; cases {t_cases:.0f} s, webhooks {t_replies:.0f} s",
                      file=sys.stderr)
                worker = gateway(["worker"], env)
                started, cpu0 = time.perf_counter(), cpu_seconds(worker.pid) or 0.0
                samples: list[dict[str, float]] = []
                while True:
                    await asyncio.sleep(1.0)
                    left = await conn.fetchval("SELECT count(*) FROM inbound_message WHERE state = 'pending'")
                    sent = sum(1 for r in fake.received if r.sid is not None)
                    rss = rss_mb(worker.pid)
                    samples.append({"t": round(time.perf_counter() - started, 1), "pending": left, "sent": sent,
                                    "rss_mb": rss or 0.0})
                    if left == 0 and sent >= 2 * n:
                        break
                    if worker.poll() is not None:
                        raise RuntimeError("the worker exited")
                elapsed = time.perf_counter() - started
                cpu = (cpu_seconds(worker.pid) or 0.0) - cpu0
                evaluations = await conn.fetchval("SELECT count(*) FROM evaluation")
            finally:
                await conn.close()
        finally:
            for p in (serve, worker):
                if p is not None:
                    p.send_signal(signal.SIGINT)
            for p in (serve, worker):
                if p is not None:
                    p.wait(timeout=60)
        tenths = []
        for k in range(1, 11):
            done_at = next((s for s in samples if n - s["pending"] >= n * k / 10), samples[-1])
            tenths.append({"processed": f"{10 * k}%", "t_s": done_at["t"], "rss_mb": done_at["rss_mb"]})
        rss = [s["rss_mb"] for s in samples if s["rss_mb"]]
        print(json.dumps({
            "machine": machine(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "replies": n,
            "evaluations": evaluations,
            "drain_seconds": round(elapsed, 1),
            "replies_per_second": round(n / elapsed, 1),
            "worker_cpu_ms_per_reply": round(1000 * cpu / n, 2),
            "rss_by_tenth": tenths,
            "rss_min_mb": min(rss), "rss_max_mb": max(rss),
            "rss_rise_first_to_last_tenth_mb": round(tenths[-1]["rss_mb"] - tenths[0]["rss_mb"], 1),
        }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
