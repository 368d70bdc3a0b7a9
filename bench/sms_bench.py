"""SMS channel benchmark: signed inbound replies per second (with p50/p99) and outbound SMS per second.

Runs a real `gateway serve` on PostgreSQL and Redis with the Twilio provider pointed at the fake Twilio
server (in this process), seeds N cases through the API, then:
  1. closed loop: inbound replies ("5", each rating its own citizen's service) as fast as C concurrent
     senders can, to find the throughput of one gateway process;
  2. open loop: inbound replies at a fixed rate for some seconds, to read p50/p99 at that rate;
  3. outbound: a `gateway worker` dispatches every queued message (prompts and replies) to the fake
     Twilio server; messages per second are counted at the fake.

    python bench/sms_bench.py --cases 6000 --concurrency 64 --rate 500 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, flush_redis, free_port, fresh_database, gateway, machine, percentiles, run, wait_ready  # noqa: E402
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, inbound_sms_params, signed_form  # noqa: E402


def phone(i: int) -> str:
    return f"+86139{i:08d}"


async def seed(url: str, key: str, n: int) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            payload = {
                "case_no": f"BENCH-{i}", "item_code": "BENCH-ITEM", "item_name": "个体工商户设立登记", "org_code": "unit",
                "region_code": "610902", "service_channel": "online", "completed_at": "2026-11-25T09:00:00+08:00",
                "citizen": {"phone": phone(i)},
            }
            async with sem, session.post(f"{url}/api/v1/cases", json=payload) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"seeding failed: {resp.status} {await resp.text()}")

        await asyncio.gather(*(one(i) for i in range(n)))


def signed_requests(public: str, start: int, n: int) -> list[tuple[dict[str, str], bytes]]:
    return [
        signed_form(f"{public}/webhooks/twilio/sms", inbound_sms_params(from_=phone(i), body="5", message_sid=f"SM{i:032x}"), AUTH_TOKEN)
        for i in range(start, start + n)
    ]


async def closed_loop(url: str, requests: list[tuple[dict[str, str], bytes]], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            for headers, body in queue:
                t0 = time.perf_counter()
                async with session.post(f"{url}/webhooks/twilio/sms", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"inbound failed: {resp.status}")
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return len(requests) / elapsed, latencies


async def open_loop(url: str, requests: list[tuple[dict[str, str], bytes]], rate: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:

        async def one(headers: dict[str, str], body: bytes) -> None:
            t0 = time.perf_counter()
            async with session.post(f"{url}/webhooks/twilio/sms", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"inbound failed: {resp.status}")
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        t0 = time.perf_counter()
        for i, (headers, body) in enumerate(requests):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(headers, body)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return len(requests) / elapsed, latencies


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    open_n = int(args.rate * args.seconds)
    closed_n = args.cases - open_n
    if closed_n < 500:
        raise SystemExit("--cases must exceed rate*seconds by at least 500")

    await flush_redis()
    async with FakeTwilio() as fake, fresh_database() as db:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {
            "GATEWAY_DATABASE_URL": db, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_PUBLIC_URL": public, "GATEWAY_PORT": str(port),
            "GATEWAY_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER, "TWILIO_API_BASE": fake.url, "GATEWAY_QUIET_HOURS": "",
            "GATEWAY_SMS_RATE_PER_SECOND": "100000", "GATEWAY_DISPATCH_BATCH_SIZE": "200",
        }
        run(["migrate"], env)
        run(["org", "add", "--code", "hanbin", "--name", "汉滨区行政审批服务局", "--kind", "county_dept", "--region", "610902"], env)
        key = run(["org", "add", "--code", "unit", "--name", "汉滨区市场监督管理局", "--kind", "unit", "--region", "610902", "--parent", "hanbin"], env).strip().splitlines()[-1]
        server = gateway(["serve"], {**env, "GATEWAY_RUN_DISPATCHER": "false"})
        try:
            await wait_ready(public)
            t0 = time.perf_counter()
            await seed(public, key, args.cases)
            seed_seconds = time.perf_counter() - t0
            warm = signed_requests(public, 0, 200)
            await closed_loop(public, warm, 16)
            closed = signed_requests(public, 200, closed_n - 200)
            closed_rate, closed_lat = await closed_loop(public, closed, args.concurrency)
            opened = signed_requests(public, closed_n, open_n)
            open_rate, open_lat = await open_loop(public, opened, args.rate)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)

        queued = args.cases * 2  # one prompt per case, one reply per inbound message
        worker = gateway(["worker"], env)
        try:
            t0 = time.perf_counter()
            while len(fake.sent) < queued and time.perf_counter() - t0 < 600:
                await asyncio.sleep(0.1)
            out_seconds = time.perf_counter() - t0
        finally:
            worker.send_signal(signal.SIGINT)
            worker.wait(timeout=60)
        result = {
            "machine": machine(),
            "cases_seeded": args.cases, "seed_cases_per_second": round(args.cases / seed_seconds, 1),
            "inbound_closed_loop": {"requests": len(closed), "concurrency": args.concurrency, "per_second": round(closed_rate, 1),
                                    **{k: round(v, 1) for k, v in percentiles(closed_lat).items()}},
            "inbound_open_loop": {"requests": len(opened), "target_per_second": args.rate, "achieved_per_second": round(open_rate, 1),
                                  **{k: round(v, 1) for k, v in percentiles(open_lat).items()}},
            "outbound": {"messages": len(fake.sent), "seconds": round(out_seconds, 2), "per_second": round(len(fake.sent) / out_seconds, 1)},
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
