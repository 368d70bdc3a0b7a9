"""A real `gateway worker` killed with SIGKILL in the middle of the feed: nothing is lost, and nothing
but the record in flight at the kill reaches the province twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sqlalchemy import func
from sqlmodel import select

from gateway.upload.models import UploadRecord
from gateway.web.keys import STORE
from tests.fakes.province_api import APP_KEY, APP_SECRET, FakeProvince

RECORDS = 40


def _worker(database_url: str, province_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_PROVINCE_PROFILE": "provincial",
           "GATEWAY_PROVINCE_BASE_URL": province_url, "GATEWAY_PROVINCE_APP_KEY": APP_KEY,
           "GATEWAY_PROVINCE_APP_SECRET": APP_SECRET, "GATEWAY_UPLOAD_CONCURRENCY": "1",
           "GATEWAY_UPLOAD_LEASE_SECONDS": "2", "GATEWAY_UPLOAD_INTERVAL_SECONDS": "0.1",
           "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_QUIET_HOURS": ""}
    env.pop("GATEWAY_REDIS_URL", None)
    with open(cwd / "worker.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway", "worker"], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


async def _wait(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds * 20)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_killed_worker_loses_nothing_and_repeats_only_the_record_in_flight(
    client, rate, fake_province: FakeProvince, database_url, tmp_path,
):
    if not database_url.startswith("postgresql"):
        pytest.skip("run once, on PostgreSQL: the worker process is the subject, on the production store")
    for _ in range(RECORDS):
        await rate(5)
    fake_province.latency_seconds = 0.05  # a kill lands in the middle of a request now and then
    first = _worker(database_url, fake_province.url, tmp_path)
    try:
        await _wait(lambda: len(fake_province.accepted) >= RECORDS // 3 or first.poll() is not None, 120, "uploads")
        assert first.poll() is None, (tmp_path / "worker.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    at_kill = len(fake_province.accepted)
    assert at_kill < RECORDS  # killed in the middle of the stream
    second = _worker(database_url, fake_province.url, tmp_path)
    try:
        await _wait(lambda: len(fake_province.accepted) == RECORDS, 120, "the rest of the uploads")
        async with client.app[STORE].transaction() as session:
            async def acknowledged() -> int:
                query = select(func.count()).select_from(UploadRecord).where(UploadRecord.status == "acknowledged")
                return int((await session.exec(query)).one())

            for _ in range(100):
                if await acknowledged() == RECORDS:
                    break
                await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert len(fake_province.accepted) == RECORDS  # nothing lost
    assert fake_province.repeats <= 1  # only the record in flight when the worker died
