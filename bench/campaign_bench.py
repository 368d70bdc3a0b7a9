"""Callback-campaign benchmark: creating a 100,000-target campaign, and sending it to the fake Twilio server.

On a fresh PostgreSQL database (and Redis, as in production):
  1. seed N resolved bad-review tickets with set-based SQL (citizens by COPY, the rest INSERT … SELECT);
  2. a real `gateway serve` takes `POST /api/v1/campaigns` for all of them: the time to create it, and
     the time of `GET /api/v1/campaigns/{id}` over that many targets;
  3. a `gateway worker` with no send-rate limit feeds and dispatches the campaign to the fake Twilio
     server (in this process) for some seconds: survey messages per second at the fake. Meanwhile
     surveyed citizens answer "1" through the serve process at a steady pace, and the time until each
     answer's confirmation reaches the fake is measured (answers go before the campaign's bulk);
  4. a second worker with GATEWAY_SMS_RATE_PER_SECOND set: the rate the fake sees (the configured rate holds).

    python bench/campaign_bench.py --tickets 100000 --seconds 60 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, copy_citizens, flush_redis, pg_connect, free_port, fresh_database, gateway, machine, percentiles, run, wait_ready  # noqa: E402
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, inbound_sms_params, signed_form  # noqa: E402

SECRET = "campaign-bench-secret-key-0123456789"
_message_sids = itertools.count(1)  # Twilio's message ids are unique: the gateway drops a repeated one
ITEM = "个体工商户设立登记"


def phone(i: int) -> str:
    return f"+86137{i:08d}"


async def seed(db_url: str, n: int) -> float:
    """N resolved tickets of 汉滨区 (610902), each with its own citizen; returns the seconds it took."""
    t0 = time.perf_counter()
    conn = await pg_connect(db_url)
    try:
        hanbin = await conn.fetchval("SELECT id FROM organisation WHERE code = 'hanbin'")
        unit = await conn.fetchval("SELECT id FROM organisation WHERE code = 'unit'")
        now = datetime.now(timezone.utc)
        await copy_citizens(conn, [phone(i) for i in range(1, n + 1)], SECRET)
        done = now - timedelta(days=3)
        await conn.execute(
            """
            INSERT INTO invitation (id, token, org_id, citizen_id, kind, group_no, region_code, item_name, office_name,
                                    service_channel, completed_at, expires_at, expires_provisional, status, rated_at, created_at)
            SELECT i, 'b' || lpad(i::text, 15, '0'), $1, i, 'single', 'BENCH-' || i, '610902', $2, '汉滨区市场监督管理局',
                   'online', $3::timestamptz, $3::timestamptz + interval '10 days', false, 'rated', $3, $3
            FROM generate_series(1, $4::int) AS i
            """,
            unit, ITEM, done, n,
        )
        await conn.execute(
            """
            INSERT INTO evaluation (id, invitation_id, scope, citizen_id, level, reason_codes, content, channel, created_at)
            SELECT i, i, 'all', i, 2, '[213]', '', 'web', $1::timestamptz FROM generate_series(1, $2::int) AS i
            """,
            done, n,
        )
        await conn.execute(
            """
            INSERT INTO ticket (id, evaluation_id, invitation_id, citizen_id, region_code, level, responsibility,
                                approval_org_id, unit_org_id, assignee_org_id, status, category, received_at, due_at,
                                due_provisional, extension_working_days, redo_count, consultation, reply_text,
                                resolved_at, created_at, updated_at, version)
            SELECT i, i, i, i, '610902', 2, 'handling', $1::int, $2::int, $1::int, 'resolved', 'general', $3::timestamptz,
                   $3::timestamptz + interval '14 days', false, 0, 0, false, '已整改', $4::timestamptz, $3, $4, 5
            FROM generate_series(1, $5::int) AS i
            """,
            hanbin, unit, done, now - timedelta(hours=1), n,
        )
        for table in ("invitation", "evaluation", "ticket"):
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {n})")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


class Answers:
    """Surveyed citizens answer "1" at a steady pace; the confirmation's arrival at the fake is timed."""

    def __init__(self, fake: FakeTwilio, public: str, per_second: float) -> None:
        self.fake, self.public, self.per_second = fake, public, per_second
        self.surveyed: deque[str] = deque()
        self.asked: dict[str, datetime] = {}
        self.latencies_ms: list[float] = []
        self.seen = 0
        self.sent_surveys = 0
        self.errors = 0

    def scan(self) -> None:
        received = self.fake.received
        for r in received[self.seen:]:
            if r.sid is None:
                continue
            body, to = r.form.get("Body", ""), r.form.get("To", "")
            if "回访：" in body:
                self.sent_surveys += 1
                if len(self.surveyed) < 10_000:
                    self.surveyed.append(to)
            elif "回访意见" in body and to in self.asked:
                self.latencies_ms.append((r.at - self.asked.pop(to)).total_seconds() * 1000)
        self.seen = len(received)

    async def run(self, seconds: float) -> None:
        async with aiohttp.ClientSession() as session:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                self.scan()
                if self.surveyed:
                    number = self.surveyed.popleft()
                    params = inbound_sms_params(from_=number, body="1", message_sid=f"SM{next(_message_sids):032x}")
                    headers, body = signed_form(f"{self.public}/webhooks/twilio/sms", params, AUTH_TOKEN)
                    self.asked[number] = datetime.now(timezone.utc)
                    async with session.post(f"{self.public}/webhooks/twilio/sms", data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            self.errors += 1
                await asyncio.sleep(1 / self.per_second)
        for _ in range(50):  # the last confirmations
            await asyncio.sleep(0.1)
            self.scan()


async def count_rate(answers: Answers, seconds: float, warmup: float = 5.0) -> float:
    """Survey messages per second at the fake, over `seconds` after a warm-up."""
    await asyncio.sleep(warmup)
    answers.scan()
    start_count, t0 = answers.sent_surveys, time.perf_counter()
    await asyncio.sleep(seconds)
    answers.scan()
    return (answers.sent_surveys - start_count) / (time.perf_counter() - t0)


async def phase(fake: FakeTwilio, public: str, env: dict[str, str], seconds: float, answers_per_second: float) -> tuple[float, list[float], int]:
    """A worker sending the campaign for `seconds`: its survey rate, and answer latencies meanwhile."""
    answers = Answers(fake, public, answers_per_second)
    answers.scan()
    answers.surveyed.clear()  # only citizens surveyed in this phase answer in it
    worker = gateway(["worker"], env)
    try:
        answering = asyncio.create_task(answers.run(seconds + 5))
        rate = await count_rate(answers, seconds)
        await answering
    finally:
        stop(worker)
    return rate, list(answers.latencies_ms), answers.errors


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def cpu_idle_percent(seconds: float = 3.0) -> float | None:
    """The machine's idle CPU share over a few seconds (other people's work skews the figures)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(100 * (idle1 - idle0) / max(1, total1 - total0), 1)


def latency(values: list[float], errors: int) -> dict[str, float]:
    """Milliseconds from an answer's webhook to its confirmation reaching the fake."""
    out: dict[str, float] = {"answered": len(values), "errors": errors}
    if len(values) > 2:
        out.update({k: round(v, 1) for k, v in percentiles(values).items()})
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60, help="length of each sending phase")
    parser.add_argument("--rate", type=float, default=100, help="GATEWAY_SMS_RATE_PER_SECOND of the second phase")
    parser.add_argument("--answers-per-second", type=float, default=5)
    parser.add_argument("--queue-ahead", type=int, default=1000)
    args = parser.parse_args()

    idle_before = cpu_idle_percent()
    await flush_redis()
    async with FakeTwilio() as fake, fresh_database() as db:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {
            "GATEWAY_DATABASE_URL": db, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_PUBLIC_URL": public, "GATEWAY_PORT": str(port),
            "GATEWAY_SECRET_KEY": SECRET, "GATEWAY_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER, "TWILIO_API_BASE": fake.url,
            "GATEWAY_QUIET_HOURS": "",
        }
        run(["migrate"], env)
        key = run(["org", "add", "--code", "hanbin", "--name", "汉滨区行政审批服务局", "--kind", "county_dept", "--region", "610902"], env).strip().splitlines()[-1]
        run(["org", "add", "--code", "unit", "--name", "汉滨区市场监督管理局", "--kind", "unit", "--region", "610902", "--parent", "hanbin"], env)
        seed_seconds = await seed(db, args.tickets)

        server = gateway(["serve"], {**env, "GATEWAY_RUN_DISPATCHER": "false"})
        try:
            await wait_ready(public)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
                t0 = time.perf_counter()
                async with session.post(f"{public}/api/v1/campaigns", json={"name": "bench"}) as resp:
                    created = await resp.json()
                    if resp.status != 201:
                        raise RuntimeError(f"campaign not created: {resp.status} {created}")
                create_seconds = time.perf_counter() - t0
                t0 = time.perf_counter()
                async with session.get(f"{public}/api/v1/campaigns/{created['id']}") as resp:
                    await resp.json()
                read_ms = (time.perf_counter() - t0) * 1000

                # Phase 1: as fast as one worker goes (no rate limit, a large chunk, large batches).
                fast = {**env, "GATEWAY_SMS_RATE_PER_SECOND": "100000", "GATEWAY_CAMPAIGN_QUEUE_AHEAD": str(args.queue_ahead),
                        "GATEWAY_DISPATCH_BATCH_SIZE": "200"}
                unlimited, answered_fast, errors_fast = await phase(fake, public, fast, args.seconds, args.answers_per_second)
                # Phase 2: the configured rate, with the default chunk size and batch size.
                paced = {**env, "GATEWAY_SMS_RATE_PER_SECOND": str(args.rate)}
                limited, answered_paced, errors_paced = await phase(fake, public, paced, args.seconds, args.answers_per_second)

                t0 = time.perf_counter()
                async with session.get(f"{public}/api/v1/campaigns/{created['id']}") as resp:
                    final = await resp.json()
                final_read_ms = (time.perf_counter() - t0) * 1000
        finally:
            stop(server)

        result = {
            "machine": machine(), "cpu_idle_before_percent": idle_before,
            "tickets_seeded": args.tickets, "seed_seconds": round(seed_seconds, 1),
            "campaign": {"targets": created["counts"]["targets"], "create_seconds": round(create_seconds, 2),
                         "read_ms_fresh": round(read_ms, 1), "read_ms_mid_campaign": round(final_read_ms, 1)},
            "dispatch_unlimited": {"surveys_per_second": round(unlimited, 1), "seconds": args.seconds,
                                   "queue_ahead": args.queue_ahead, "batch_size": 200,
                                   "answers": latency(answered_fast, errors_fast)},
            "dispatch_limited": {"configured_per_second": args.rate, "surveys_per_second": round(limited, 1),
                                 "queue_ahead": "auto", "batch_size": 50, "answers": latency(answered_paced, errors_paced)},
            "campaign_counts_at_end": final["counts"],
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
