"""The command line, run as a newcomer would."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def _run(*args: str, cwd, env_extra=None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{cwd}/cli.db", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_org_add_prints_the_key_once_and_stores_it_hashed(tmp_path):
    result = _run("org", "add", "--code", "city", "--name", "安康市行政审批服务局", "--kind", "city_bureau", "--region", "610900", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("gk_") and len(key) > 40
    import sqlite3

    rows = sqlite3.connect(tmp_path / "cli.db").execute("SELECT key_hash, prefix FROM api_key").fetchall()
    assert len(rows) == 1 and key not in rows[0][0] and rows[0][1] in key
    again = _run("org", "add", "--code", "city", "--name", "x", "--kind", "city_bureau", "--region", "610900", cwd=tmp_path)
    assert again.returncode == 2 and "already registered" in again.stderr


def test_org_add_validates(tmp_path):
    result = _run("org", "add", "--code", "x", "--name", "某县", "--kind", "county_dept", "--region", "610900", cwd=tmp_path)
    assert result.returncode == 2 and "county region code" in result.stderr


def test_calendar_due(tmp_path):
    result = _run("calendar", "due", "2026-02-13", "--working-days", "5", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("2026-02-27")
    result = _run("calendar", "due", "2026-12-28", "--working-days", "5", cwd=tmp_path)
    assert "provisional" in result.stdout
    bad = _run("calendar", "due", "2026-13-01", "--working-days", "5", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr


def test_migrate_then_demo(tmp_path):
    assert _run("migrate", cwd=tmp_path).returncode == 0
    demo = _run("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "ticket #1" in demo.stdout and "汉滨区行政审批服务局" in demo.stdout and "24:00" in demo.stdout
    assert "13812341234" not in demo.stdout
    assert "rule burst" in demo.stdout and "5 ratings stop counting" in demo.stdout and "13900001111" not in demo.stdout
    # Every record the demo wrote (its ratings, and the fraud ruling's decisions) is chained, none missing.
    # The public figures published the log's head, and verify checked the chain against it.
    head = re.search(r"recorded as published: seq (\d+) sha256 ([0-9a-f]{64})", demo.stdout)
    assert head, demo.stdout
    assert re.search(
        rf"evaluation log intact: (\d+) records checked, head seq \1 sha256 {head[2]}, 1 published heads agree",
        demo.stdout,
    )
    assert demo.stdout.index("满意度") < head.start() < demo.stdout.index("evaluation log intact")


def test_inbox_status_and_set_aside_messages(tmp_path):
    import sqlite3

    assert _run("migrate", cwd=tmp_path).returncode == 0
    db = sqlite3.connect(tmp_path / "cli.db")
    db.execute(
        "INSERT INTO inbound_message (provider, provider_id, received_at, state, sender_hash, sender_enc, body, attempts, processed_at, error) "
        "VALUES ('twilio', 'SM1', '2026-11-25 01:00:00', 'dead', 'h', 'not-a-token', '好', 6, '2026-11-25 01:10:00', 'given up after 5 attempts')"
    )
    db.commit()
    status = _run("inbox", cwd=tmp_path)
    assert status.returncode == 0 and "pending: 0" in status.stdout and "set_aside: 1" in status.stdout
    listed = _run("inbox", "failed", cwd=tmp_path)
    assert "given up after 5 attempts" in listed.stdout and "unreadable" in listed.stdout
    assert "1 of 1 purged" in _run("inbox", "purge", "1", cwd=tmp_path).stdout
    assert db.execute("SELECT body, sender_enc, state FROM inbound_message").fetchone() == (None, None, "purged")
    assert "set_aside: 0" in _run("inbox", cwd=tmp_path).stdout  # a purged message is dealt with
    assert "0 of 1 back in the inbox" in _run("inbox", "retry", "1", cwd=tmp_path).stdout  # no number left to answer
    assert _run("inbox", "retry", "x", cwd=tmp_path).returncode == 2
