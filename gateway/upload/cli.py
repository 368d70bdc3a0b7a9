"""`gateway upload …`: the operator's view of the feed to the provincial platform.

gateway upload status          # pending, acknowledged, set aside; the oldest pending one's age;
                               # the records set aside, with the province's message
gateway upload retry ID …      # put set-aside records back in the feed (sent alone, next pass)
gateway upload reconcile DATE  # a local day (Asia/Shanghai): sent and acknowledged per level and
                               # channel; with a count endpoint, the province's counts and the gap
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import date

import aiohttp

from gateway.clock import SystemClock, as_utc
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.upload.feed import retry, set_aside, upload_status
from gateway.upload.reconcile import reconcile
from gateway.upload.transport import CountsUnavailable
from gateway.wiring.upload import build_transport

LEVEL_WORDS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _status(store: Store, settings: Settings) -> int:
    status = await upload_status(store, SystemClock().now())
    profile = settings.province
    base = settings.province_base_url or (profile.endpoint.base_url if profile else "")
    target = f"{profile.name} ({base})" if profile else "none configured"
    print(f"province: {target}")
    print(
        f"pending {status['pending']} (being sent {status['sending']}), "
        f"sent and acknowledged {status['acknowledged']}, failed {status['failed']}; "
        f"oldest pending {_age(status['oldest_pending_seconds'])}"
    )
    rows = await set_aside(store)
    if rows:
        print("set aside (retry with `gateway upload retry ID…` once the cause is fixed):")
    for row in rows:
        print(
            f"  {row.id}\t{row.record_key}\t{as_utc(row.updated_at).isoformat(timespec='seconds')}\t"
            f"tries {row.attempts}\t{row.error_code}: {row.last_error or ''}"
        )
    return 0


async def _reconcile(store: Store, settings: Settings, day: date) -> int:
    profile = settings.province
    if profile is None:
        print("gateway: no province profile is configured (GATEWAY_PROVINCE_PROFILE)")
        return 2
    async with aiohttp.ClientSession() as session:
        try:
            result = await reconcile(store, profile, build_transport(settings, session), day)
        except (TimeoutError, CountsUnavailable, aiohttp.ClientError) as exc:
            print(f"gateway: cannot read the province's counts: {exc}")
            return 1
    print(f"{day.isoformat()} ({profile.times.timezone}), evaluations given that day, first records:")
    print(f"{'level':<14}{'channel':<12}{'province':>9}{'recorded':>10}{'sent':>7}{'acknowledged':>14}{'failed':>8}")
    for (level, channel), tally in sorted(result.rows.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        code = f"{profile.channel_code(channel)}/{profile.level_code(level)}"
        print(
            f"{level} {LEVEL_WORDS.get(level, ''):<12}{channel:<12}{code:>9}{tally.recorded:>10}{tally.sent:>7}"
            f"{tally.acknowledged:>14}{tally.failed:>8}"
        )
    total = result.total
    print(f"{'total':<26}{'':>9}{total.recorded:>10}{total.sent:>7}{total.acknowledged:>14}{total.failed:>8}")
    if not result.compared:
        print("the profile has no count endpoint: nothing to compare with")
        return 0
    if not result.gaps:
        print("the province's counts match what it acknowledged")
        return 0
    print("gaps against the province's own counts (channel/level in its codes):")
    for gap in result.gaps:
        print(
            f"  {gap.channel}/{gap.level}: acknowledged {gap.acknowledged}, province counts {gap.province}, "
            f"difference {gap.missing:+d}"
        )
    return 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> int:
        store = Store.connect(settings.database_url)
        try:
            if settings.is_sqlite:
                from gateway.store.migrate import upgrade

                await upgrade(store.engine)
            action = args.upload_command or "status"
            if action == "retry":
                done = await retry(store, args.ids, SystemClock().now())
                print(f"{done} of {len(args.ids)} back in the feed")
                if done < len(args.ids):
                    print("the others are not set aside (unknown, waiting, or acknowledged already)")
                return 0
            if action == "reconcile":
                return await _reconcile(store, settings, args.date)
            return await _status(store, settings)
        finally:
            await store.close()

    return asyncio.run(go())


def add_parser(
    sub: argparse._SubParsersAction,
    handler: Callable[[argparse.Namespace], int],
) -> None:
    upload = sub.add_parser("upload", help="the feed to the provincial platform: status, retry, reconcile")
    upload.set_defaults(func=handler, upload_command=None)
    actions = upload.add_subparsers(dest="upload_command")
    actions.add_parser("status", help="pending, acknowledged and set-aside counts and the records set aside (default)")
    again = actions.add_parser("retry", help="put set-aside records back in the feed")
    again.add_argument("ids", nargs="+", type=int)
    day = actions.add_parser("reconcile", help="counts for a local day; compared with the province's when it can")
    day.add_argument("date", type=date.fromisoformat, help="YYYY-MM-DD, a local day")
