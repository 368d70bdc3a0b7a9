"""`gateway campaign …` as an operator runs it: a real subprocess on the test's database, sending to the
fake Twilio server, with a progress bar and a final summary."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.gateway.callbacks.conftest import flush, phone_number

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(database_url: str, fake_twilio):  # type: ignore[no-untyped-def]
    """SMS only here: the subprocess runs without the bot."""
    from gateway.settings import load_settings

    return load_settings(
        database_url=database_url, public_url="http://gateway.test", run_dispatcher=False, sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url,
    )


async def gateway(*args: str, settings: Any, cwd: Path) -> tuple[int, str, str]:
    """Run `python -m gateway …` without blocking the loop (the fake Twilio server lives on it)."""
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_PUBLIC_URL": settings.public_url, "GATEWAY_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER, "TWILIO_API_BASE": settings.twilio_api_base,
        "GATEWAY_QUIET_HOURS": "", "GATEWAY_LOG_LEVEL": "WARNING", "TELEGRAM_BOT_TOKEN": "",
        "GATEWAY_SMS_RATE_PER_SECOND": "50",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_start_follows_the_campaign_to_the_end_of_sending(client, world, make_resolved, fake_twilio, settings, tmp_path):
    tickets = [await make_resolved(phone=phone_number(i)) for i in range(1, 4)]
    await flush(client)
    before = len(fake_twilio.sent)

    code, out, err = await gateway(
        "campaign", "start", "--org", "hanbin", "--name", "三月回访", "--resolved-from", "2026-03-01", "--dispatch",
        settings=settings, cwd=tmp_path,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "campaign 1 created by hanbin: 3 targets, running"
    assert "campaign 1 (running): 3 targets · sent 3 ·" in out and "failed 0 · skipped 0 · waiting 0" in out
    assert "satisfaction rate n/a" in out
    assert "campaign 1: 100%" in err and "3/3" in err  # the progress bar
    texts = [r.form for r in fake_twilio.sent[before:]]
    assert sorted(f["To"] for f in texts) == [f"+86{phone_number(i)}" for i in range(1, 4)]
    assert all("差评的整改结果是否满意" in f["Body"] for f in texts)

    # Read it back, and steer it, by org code; the API's jurisdiction holds.
    code, out, _ = await gateway("campaign", "status", "1", "--org", "hanbin", settings=settings, cwd=tmp_path)
    assert code == 0 and out.startswith("campaign 1 (running): 3 targets")
    code, _, err = await gateway("campaign", "status", "1", "--org", "hanyin", settings=settings, cwd=tmp_path)
    assert code == 2 and "does not exist or belongs to another department" in err
    code, _, err = await gateway("campaign", "cancel", "1", "--org", "hanbin", settings=settings, cwd=tmp_path)
    assert code == 0
    code, _, err = await gateway("campaign", "pause", "1", "--org", "hanbin", settings=settings, cwd=tmp_path)
    assert code == 2 and "it is cancelled" in err
    assert len(tickets) == 3


async def test_start_refuses_clearly(client, world, make_resolved, settings, tmp_path):
    code, _, err = await gateway("campaign", "start", "--org", "nobody", settings=settings, cwd=tmp_path)
    assert code == 2 and "organisation 'nobody' is not registered" in err
    code, _, err = await gateway("campaign", "start", "--org", "hanbin", settings=settings, cwd=tmp_path)
    assert code == 2 and "no ticket matched" in err
    code, _, err = await gateway("campaign", "start", "--org", "hanbin-market", settings=settings, cwd=tmp_path)
    assert code == 2 and "approval departments" in err
    code, _, err = await gateway("campaign", "start", "--org", "hanbin", "--starts-at", "2026-03-05T09:00", settings=settings, cwd=tmp_path)
    assert code == 2 and "starts_at" in err
