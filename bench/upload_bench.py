"""Upload benchmark: records per second from a `gateway worker` to the fake province, and CPU per record.

On a fresh PostgreSQL database:
  1. a real `gateway serve` (no background work) takes N cases and N ratings over HTTP, with the
     `provincial` profile configured: each rating writes its upload record in its own transaction, as
     in production (the intake rate is printed too);
  2. for each layout asked for (concurrency, batch size), a `gateway worker` is started against the
     fake province (in this process, on loopback, checking every signature) and uploads the N records:
     records per second at the fake, from its first request to its last, and the worker's CPU seconds
     per record over the same span. Between layouts the records are put back to pending with SQL.

    python bench/upload_bench.py --records 2000 --layouts 1x1 4x1 4x50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    cpu_seconds, free_port, fresh_database, gateway, machine, pg_connect, run, wait_ready,
)
from gateway.upload.profile import PROFILES_DIR, load_profile  # noqa: E402
from tests.fakes.province_api import APP_KEY, APP_SECRET, FakeProvince  # noqa: E402

ORGS = [
    ("city", "安康市行政审批服务局", "city_bureau", "610900", None),
    ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", "city"),
    ("hanbin-market", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
]


def profile_with_batch(batch: int, directory: Path) -> str:
    if batch == 1:
        return "provincial"
    text = (PROFILES_DIR / "provincial.toml").read_text(encoding="utf-8")
    text = text.replace("batch_size = 1", f"batch_size = {batch}")
    path = directory / f"provincial-batch{batch}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def intake(url: str, key: str, n: int) -> float:
    """N cases and N ratings (mostly good, every tenth bad with a reason) through the API."""
    gate = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with gate:
            case = {"case_no": f"UB-{i:07d}", "item_code": "11610902MB0001", "item_name": "个体工商户设立登记",
                    "org_code": "hanbin-market", "region_code": "610902", "service_channel": "online",
                    "completed_at": "2026-12-04T09:30:00+08:00"}
            async with session.post(f"{url}/api/v1/cases", json=case, headers=headers) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"case refused: {resp.status} {body}")
            rating = {"level": 2, "reasons": [213]} if i % 10 == 0 else {"level": 5 - i % 2}
            async with session.post(f"{url}/r/{body['invitation']['token']}", json=rating) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"rating refused: {resp.status} {await resp.text()}")

    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i) for i in range(n)))
    return time.perf_counter() - t0


async def upload(db: str, n: int, concurrency: int, batch: int, directory: Path) -> dict[str, float]:
    profile_ref = profile_with_batch(batch, directory)
    async with FakeProvince(profile=load_profile(profile_ref)) as fake:
        env = {"GATEWAY_DATABASE_URL": db, "GATEWAY_PROVINCE_PROFILE": profile_ref,
               "GATEWAY_PROVINCE_BASE_URL": fake.url,
               "GATEWAY_PROVINCE_APP_KEY": APP_KEY, "GATEWAY_PROVINCE_APP_SECRET": APP_SECRET,
               "GATEWAY_UPLOAD_CONCURRENCY": str(concurrency), "GATEWAY_QUIET_HOURS": ""}
        worker = gateway(["worker"], env)
        try:
            while not fake.requests:
                if worker.poll() is not None:
                    raise RuntimeError("the worker stopped; see /tmp/gateway-bench-worker.log")
                await asyncio.sleep(0.005)
            t0, cpu0 = time.perf_counter(), cpu_seconds(worker.pid) or 0.0
            while len(fake.accepted) < n:
                await asyncio.sleep(0.01)
            elapsed, cpu = time.perf_counter() - t0, (cpu_seconds(worker.pid) or 0.0) - cpu0
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        if fake.unauthorised:
            raise RuntimeError(f"{fake.unauthorised} requests failed the signature check")
        return {"concurrency": concurrency, "batch_size": batch, "records": n, "requests": fake.requests,
                "seconds": round(elapsed, 2), "records_per_second": round(n / elapsed, 1),
                "worker_cpu_ms_per_record": round(1000 * cpu / n, 2), "repeats": fake.repeats}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--layouts", nargs="+", default=["1x1", "4x1", "4x50"], help="CONCURRENCYxBATCH")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    async with fresh_database() as db, FakeProvince(profile=load_profile("provincial")) as idle:
        run(["migrate"], {"GATEWAY_DATABASE_URL": db})
        keys = {}
        for code, name, kind, region, parent in ORGS:
            command = ["org", "add", "--code", code, "--name", name, "--kind", kind, "--region", region]
            command += ["--parent", parent] if parent else []
            keys[code] = run(command, {"GATEWAY_DATABASE_URL": db}).split()[-1]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"GATEWAY_DATABASE_URL": db, "GATEWAY_PORT": str(port), "GATEWAY_PUBLIC_URL": url,
               "GATEWAY_RUN_DISPATCHER": "false", "GATEWAY_PROVINCE_PROFILE": "provincial",
               "GATEWAY_PROVINCE_BASE_URL": idle.url, "GATEWAY_PROVINCE_APP_KEY": APP_KEY,
               "GATEWAY_PROVINCE_APP_SECRET": APP_SECRET}
        serve = gateway(["serve"], env)
        try:
            await wait_ready(url)
            seconds = await intake(url, keys["hanbin-market"], args.records)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
        print(json.dumps({"intake_ratings_per_second": round(args.records / seconds, 1), "seconds": round(seconds, 1)}))
        conn = await pg_connect(db)
        try:
            queued = await conn.fetchval("SELECT count(*) FROM upload_record")
            print(json.dumps({"upload_records_queued": queued}))
            with tempfile.TemporaryDirectory() as tmp:
                for layout in args.layouts:
                    concurrency, batch = (int(x) for x in layout.split("x"))
                    await conn.execute("UPDATE upload_record SET status = 'pending', attempts = 0, "
                                       "next_attempt_at = now(), acknowledged_at = NULL, first_sent_at = NULL")
                    print(json.dumps(await upload(db, queued, concurrency, batch, Path(tmp))), flush=True)
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
