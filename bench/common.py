"""Shared pieces of the benchmarks: a fresh PostgreSQL database, a gateway subprocess, latency stats."""

from __future__ import annotations

import asyncio
import os
import signal
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(name: str, *, driver: bool = True) -> str:
    """The URL of database `name` on the benchmark's server: for the gateway (SQLAlchemy's asyncpg driver)
    or, with driver=False, for asyncpg itself. BENCH_POSTGRES_URL may name a Unix socket:
    postgresql://postgres@/postgres?host=/var/run/postgresql"""
    address, _, query = PG_ADMIN.partition("?")
    base = address.rsplit("/", 1)[0]
    if driver:
        base = base.replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}" + (f"?{query}" if query else "")


def database_name(url: str) -> str:
    """The database's name in a URL made by `database_url` (a Unix socket's ?host=… left aside)."""
    return url.partition("?")[0].rsplit("/", 1)[1]


@asynccontextmanager
async def fresh_database(prefix: str = "gw_bench_") -> AsyncIterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield database_url(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def flush_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


def gateway(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {**os.environ, "GATEWAY_LOG_LEVEL": "WARNING", **env}
    prefix: list[str] = []
    profile = os.environ.get("BENCH_PYSPY_DIR")
    if profile and not os.environ.get("BENCH_PYSPY_PHASE"):  # a flame graph of each gateway process (needs py-spy)
        fmt = os.environ.get("BENCH_PYSPY_FORMAT", "speedscope")
        prefix = ["py-spy", "record", "--format", fmt, "-o", f"{profile}/{command[0]}.{fmt}", "--"]
    log = open(f"/tmp/gateway-bench-{command[0]}.log", "wb")  # noqa: SIM115 (kept open for the child)
    return subprocess.Popen([*prefix, sys.executable, "-m", "gateway", *command], cwd=ROOT, env=full,
                            stdout=log, stderr=subprocess.STDOUT)


class PhaseProfile:
    """With BENCH_PYSPY_DIR and BENCH_PYSPY_PHASE=NAME, py-spy records the given processes during the phase
    NAME only (attached by pid; started with `start(name, pids)`, stopped with `stop()`)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, phase: str, pids: list[int]) -> None:
        directory, wanted = os.environ.get("BENCH_PYSPY_DIR"), os.environ.get("BENCH_PYSPY_PHASE")
        if not directory or wanted != phase:
            return
        fmt = os.environ.get("BENCH_PYSPY_FORMAT", "speedscope")
        for pid in pids:
            out = f"{directory}/{phase}-{pid}.{fmt}"
            self.children.append(subprocess.Popen(["py-spy", "record", "--format", fmt, "-o", out, "--pid", str(pid)]))
        time.sleep(0.5)  # attached before the phase starts

    def stop(self) -> None:
        for child in self.children:
            child.send_signal(signal.SIGINT)
        for child in self.children:
            child.wait(timeout=60)
        self.children.clear()


def run(command: list[str], env: dict[str, str]) -> str:
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-m", "gateway", *command], cwd=ROOT, env=full, capture_output=True, text=True, check=True)
    return done.stdout


async def wait_ready(url: str, timeout: float = 30) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("gateway did not become ready")


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": ordered[-1]}


SECRET = "bench-secret-key-0123456789-abcdef"


async def copy_citizens(conn, numbers: list[str], secret: str = SECRET) -> None:  # type: ignore[no-untyped-def]
    """Citizens 1..N by COPY, their numbers encrypted and hashed as the gateway does it."""
    from datetime import datetime, timezone

    from gateway.privacy import PhoneVault, mask_phone

    vault = PhoneVault(secret)
    now = datetime.now(timezone.utc)
    records = [(i, vault.lookup_hash(n), vault.encrypt(n), mask_phone(n), now) for i, n in enumerate(numbers, start=1)]
    await conn.copy_records_to_table("citizen", records=records, columns=["id", "phone_hash", "phone_enc", "phone_masked", "created_at"])
    await conn.execute(f"SELECT setval(pg_get_serial_sequence('citizen', 'id'), {len(numbers)})")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pg_connect(db_url: str) -> asyncpg.Connection:
    """A plain asyncpg connection to the gateway's database (its URL names the SQLAlchemy driver)."""
    return await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
