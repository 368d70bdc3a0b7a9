"""`gateway stats rebuild`: refill the roll-ups from the raw rows (after migrating a store that already
holds ratings)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.settings import Settings


def add_parser(sub: Any, func: Any) -> None:
    stats = sub.add_parser("stats", help="statistics: rebuild the roll-ups").add_subparsers(
        dest="stats_command", required=True
    )
    stats.add_parser("rebuild", help="recount every roll-up row from the raw evaluations").set_defaults(func=func)


async def _rebuild(settings: Settings) -> int:
    from gateway.deps import Deps
    from gateway.stats.rollup import rebuild
    from gateway.store.db import Store

    deps = Deps.build(settings)
    store = Store.connect(settings.database_url)
    try:
        async with store.transaction() as session:
            rows = await rebuild(session, deps.calendar)
    finally:
        await store.close()
    print(f"roll-ups rebuilt: {rows} rows")
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.stats_command == "rebuild":
        return asyncio.run(_rebuild(settings))
    return 2
