"""`gateway upload status | retry | reconcile DATE`, and the reconciliation behind the last one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest

from gateway.upload.reconcile import reconcile
from gateway.web.keys import STORE
from tests.fakes.province_api import APP_KEY, APP_SECRET
from tests.gateway.upload.conftest import upload_rows

DAY = date(2026, 3, 4)  # the test clock's day in Asia/Shanghai


async def drain(feed) -> None:  # type: ignore[no-untyped-def]
    while await feed.run_once():
        pass


async def gateway(database_url: str, province_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_PROVINCE_PROFILE": "provincial",
           "GATEWAY_PROVINCE_BASE_URL": province_url, "GATEWAY_PROVINCE_APP_KEY": APP_KEY,
           "GATEWAY_PROVINCE_APP_SECRET": APP_SECRET, "GATEWAY_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "upload", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return int(process.returncode or 0), out.decode()


async def test_reconciliation_counts_the_day_and_finds_the_gap(client, rate, feed, fake_province):
    await rate(5)
    await rate(5)
    await rate(2, reasons=[213])
    fake_province.refuse(lambda r: "办件编号重复" if r["satisfaction"] == 2 else None)
    await drain(feed)
    result = await reconcile(client.app[STORE], feed.profile, feed.transport, DAY)
    assert result.compared and result.gaps == []
    by_level = {level: (t.recorded, t.sent, t.acknowledged, t.failed) for (level, _), t in result.rows.items()}
    assert by_level == {5: (2, 2, 2, 0), 2: (1, 1, 0, 1)}
    # The province counts one 5 too few on 移动端 ("2"): the gap is listed in its codes.
    fake_province.count_extra[("2", "5")] = -1
    result = await reconcile(client.app[STORE], feed.profile, feed.transport, DAY)
    gaps = [(g.channel, g.level, g.acknowledged, g.province, g.missing) for g in result.gaps]
    assert gaps == [("2", "5", 2, 1, 1)]
    fake_province.count_extra.clear()
    other_day = await reconcile(client.app[STORE], feed.profile, feed.transport, date(2026, 3, 5))
    assert other_day.rows == {} and other_day.gaps == []


async def test_the_commands(client, rate, feed, fake_province, database_url, clock):
    if not database_url.startswith("sqlite"):
        pytest.skip("the commands read the store as the tests above do on both; run once, on SQLite")
    await rate(5)
    await rate(4, item_code="BAD-CODE")
    fake_province.refuse(lambda r: "事项编码不存在" if r["taskCode"] == "BAD-CODE" else None)
    await drain(feed)
    code, out = await gateway(database_url, fake_province.url, "status")
    assert code == 0, out
    assert "pending 0 (being sent 0), sent and acknowledged 1, failed 1" in out
    bad = next(r for r in await upload_rows(client) if r.status == "failed")
    assert f"{bad.id}\t{bad.record_key}" in out and "http_400: 事项编码不存在" in out

    code, out = await gateway(database_url, fake_province.url, "reconcile", DAY.isoformat())
    assert code == 0, out
    assert "the province's counts match what it acknowledged" in out
    assert "5 非常满意" in out and "4 满意" in out

    fake_province.count_extra[("2", "4")] = 1  # the province counts a 满意 it refused
    code, out = await gateway(database_url, fake_province.url, "reconcile", DAY.isoformat())
    assert code == 1 and "2/4: acknowledged 0, province counts 1, difference -1" in out

    fake_province.refuse(lambda r: None)
    code, out = await gateway(database_url, fake_province.url, "retry", str(bad.id), "999999")
    assert code == 0 and "1 of 2 back in the feed" in out
    clock.set(datetime.now(timezone.utc) + timedelta(seconds=1))  # the command put it back at the real time
    await drain(feed)
    assert {r.status for r in await upload_rows(client)} == {"acknowledged"}


def test_the_demo_shows_an_uploaded_record(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_", "TELEGRAM_"))}
    result = subprocess.run([sys.executable, "-m", "gateway", "demo"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "The upload feed sent 2 records" in result.stdout
    assert '"assessId": "1:1"' in result.stdout and '"satisfaction": 2' in result.stdout
    assert "then 1:2 (assessNumber 2 追加)" in result.stdout
