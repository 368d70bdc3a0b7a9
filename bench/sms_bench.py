"""SMS channel benchmark: signed inbound replies (intake, processing, end to end) and outbound SMS.

On a fresh PostgreSQL database with Redis, with the Twilio provider pointed at the fake Twilio server
(in this process):
  0. seed N citizens (COPY), each with an open invitation (INSERT … SELECT), as if their cases had been
     reported and prompted;
  1. end to end at a steady pace: one `gateway serve` (webhooks only) and one `gateway worker` (SMS inbox
     drainer and dispatcher); citizens reply "5" at --e2e-rate for --e2e-seconds, and the time from
     posting the signed webhook to the arrival of the gateway's answer at the fake is measured;
  2. intake, with the worker stopped: replies posted as fast as C concurrent senders can (closed loop),
     then at --rate for --seconds (open loop): webhook answers per second with p50/p99 — the reply is
     stored (deduplicated, sender encrypted) when the answer comes;
  3. intake in the single-process default: a serve process that also drains and sends, posted at
     --rate for --seconds (it processes the backlog meanwhile);
  4. processing: one worker works through the stored backlog for --drain-seconds: replies processed
     per second (rating recorded, answer queued, all in one transaction), answers sent per second, and
     the worker's CPU time per reply.

    python bench/sms_bench.py --closed 6000 --rate 500 --seconds 8 --e2e-rate 20 --e2e-seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    copy_citizens,
    cpu_seconds,
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

Requests = list[tuple[str, dict[str, str], bytes]]  # (sender, signed headers, form body)


def phone(i: int) -> str:
    return f"+86139{i:08d}"


async def seed(db_url: str, n: int) -> float:
    """N citizens, each with an open invitation of 汉滨区市场监督管理局; returns the seconds it took."""
    t0 = time.perf_counter()
    conn = await pg_connect(db_url)
    try:
        unit = await conn.fetchval("SELECT id FROM organisation WHERE code = 'unit'")
        await copy_citizens(conn, [phone(i) for i in range(1, n + 1)])
        done = datetime.now(timezone.utc) - timedelta(hours=2)
        await conn.execute(
            """
            INSERT INTO invitation (id, token, org_id, citizen_id, kind, group_no, region_code, item_name, office_name,
                                    service_channel, completed_at, expires_at, expires_provisional, status, created_at)
            SELECT i, 's' || lpad(i::text, 15, '0'), $1, i, 'single', 'BENCH-' || i, '610902', '个体工商户设立登记',
                   '汉滨区市场监督管理局', 'online', $2::timestamptz, $2::timestamptz + interval '10 days', false, 'open', $2
            FROM generate_series(1, $3::int) AS i
            """,
            unit, done, n,
        )
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('invitation', 'id'), {n})")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


def signed_requests(public: str, first: int, n: int) -> Requests:
    out = []
    for i in range(first, first + n):
        headers, body = signed_form(f"{public}/webhooks/twilio/sms", inbound_sms_params(from_=phone(i), body="5", message_sid=f"SM{i:032x}"), AUTH_TOKEN)
        out.append((phone(i), headers, body))
    return out


async def post(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> None:
    async with session.post(f"{url}/webhooks/twilio/sms", data=body, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"inbound failed: {resp.status}")


async def closed_loop(url: str, requests: Requests, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            for _, headers, body in queue:
                t0 = time.perf_counter()
                await post(session, url, headers, body)
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return len(requests) / elapsed, latencies


async def open_loop(url: str, requests: Requests, rate: float) -> tuple[float, list[float], dict[str, float]]:
    """Posts at a fixed rate whatever the answers take; returns the rate, latencies and each post's wall time."""
    latencies: list[float] = []
    posted: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2000)) as session:

        async def one(sender: str, headers: dict[str, str], body: bytes) -> None:
            posted[sender] = time.time()
            t0 = time.perf_counter()
            await post(session, url, headers, body)
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        t0 = time.perf_counter()
        for i, (sender, headers, body) in enumerate(requests):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sender, headers, body)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return len(requests) / elapsed, latencies, posted


async def backlog(db_url: str) -> int:
    conn = await pg_connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbound_message WHERE state = 'pending'"))
    finally:
        await conn.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def summary(latencies: list[float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in percentiles(latencies).items()}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--closed", type=int, default=6000, help="replies posted in the closed loop")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500, help="replies per second of the open loop")
    parser.add_argument("--seconds", type=float, default=8, help="length of the open loop")
    parser.add_argument("--e2e-rate", type=float, default=20)
    parser.add_argument("--e2e-seconds", type=float, default=15)
    parser.add_argument("--drain-seconds", type=float, default=30)
    args = parser.parse_args()
    e2e_n, open_n = int(args.e2e_rate * args.e2e_seconds), int(args.rate * args.seconds)
    total = e2e_n + 200 + args.closed + 2 * open_n

    await flush_redis()
    async with FakeTwilio() as fake, fresh_database() as db:
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
        run(["org", "add", "--code", "unit", "--name", "汉滨区市场监督管理局", "--kind", "unit", "--region", "610902", "--parent", "hanbin"], env)
        seed_seconds = await seed(db, total)
        server = gateway(["serve"], {**env, "GATEWAY_RUN_DISPATCHER": "false"})
        try:
            await wait_ready(public)
            # 1. end to end at a steady pace, with one worker processing and sending
            worker = gateway(["worker"], env)
            try:
                await asyncio.sleep(3)  # the worker connects
                paced = signed_requests(public, 1, e2e_n)
                _, e2e_webhook, posted = await open_loop(public, paced, args.e2e_rate)
                deadline = time.monotonic() + 60
                answered: dict[str, float] = {}
                while len(answered) < len(posted) and time.monotonic() < deadline:
                    answered = {r.form["To"]: r.at.timestamp() for r in fake.sent if r.form.get("To") in posted}
                    await asyncio.sleep(0.2)
                e2e = [(answered[s] - posted[s]) * 1000 for s in posted if s in answered]
            finally:
                stop(worker)
            # 2. intake alone: the webhook stores and answers; nothing processes meanwhile
            start = 1 + e2e_n
            await closed_loop(public, signed_requests(public, start, 200), 16)  # warm-up
            closed = signed_requests(public, start + 200, args.closed)
            closed_rate, closed_lat = await closed_loop(public, closed, args.concurrency)
            opened = signed_requests(public, start + 200 + args.closed, open_n)
            open_rate, open_lat, _ = await open_loop(public, opened, args.rate)
        finally:
            stop(server)

        # 3. intake while the same serve process also processes, as in
        #    the single-process default (GATEWAY_RUN_DISPATCHER=true)
        both = gateway(["serve"], env)
        try:
            await wait_ready(public)
            await asyncio.sleep(2)
            mixed = signed_requests(public, start + 200 + args.closed + open_n, open_n)
            backlog_before = await backlog(db)
            mixed_rate, mixed_lat, _ = await open_loop(public, mixed, args.rate)
            processed_meanwhile = backlog_before + len(mixed) - await backlog(db)
        finally:
            stop(both)

        # 4. processing: one worker works through the stored backlog
        before, sent_before = await backlog(db), len(fake.sent)
        worker = gateway(["worker"], env)
        try:
            await asyncio.sleep(2)
            t0, left0, sent0, cpu0 = time.perf_counter(), await backlog(db), len(fake.sent), cpu_seconds(worker.pid)
            await asyncio.sleep(args.drain_seconds)
            elapsed, left1, sent1, cpu1 = time.perf_counter() - t0, await backlog(db), len(fake.sent), cpu_seconds(worker.pid)
        finally:
            stop(worker)
        result = {
            "machine": machine(),
            "seeded_citizens_with_open_invitations": total, "seed_seconds": round(seed_seconds, 1),
            "end_to_end": {"replies": len(posted), "per_second": args.e2e_rate, "answered": len(e2e),
                           "webhook_ms": summary(e2e_webhook), "reply_to_answer_at_twilio_ms": summary(e2e) if e2e else None},
            "intake_closed_loop": {"requests": len(closed), "concurrency": args.concurrency, "per_second": round(closed_rate, 1),
                                   **summary(closed_lat)},
            "intake_open_loop": {"requests": len(opened), "target_per_second": args.rate, "achieved_per_second": round(open_rate, 1),
                                 **summary(open_lat)},
            "intake_open_loop_while_the_same_process_drains": {
                "requests": len(mixed), "target_per_second": args.rate, "achieved_per_second": round(mixed_rate, 1), **summary(mixed_lat),
                "processed_meanwhile": processed_meanwhile, "seconds": round(len(mixed) / mixed_rate, 1)},
            "processing": {"backlog_at_start": before, "seconds": round(elapsed, 1), "processed": left0 - left1,
                           "processed_per_second": round((left0 - left1) / elapsed, 1),
                           "answers_sent_per_second": round((sent1 - sent0) / elapsed, 1), "sent_before": sent_before,
                           # the worker's CPU per reply, processing and sending its answer included
                           "worker_cpu_ms_per_reply": round(1000 * (cpu1 - cpu0) / max(1, left0 - left1), 2) if cpu0 is not None and cpu1 is not None else None,
                           "worker_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1) if cpu0 is not None and cpu1 is not None else None},
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
