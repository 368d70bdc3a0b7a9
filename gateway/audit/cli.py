"""`gateway audit verify`: the command line of the evaluation log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built for every command: the verifier is imported only when it runs
    from gateway.audit.verify import Verified
    from gateway.settings import Settings

PAGE_SIZE = 100_000  # gateway.audit.verify.PAGE_SIZE, kept here so the parser imports nothing
JOBS = 2  # gateway.audit.verify.JOBS


def add_parser(
    sub: argparse._SubParsersAction,
    handler: Callable[[argparse.Namespace], int],
) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident evaluation log")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    check = actions.add_parser(
        "verify", help="recompute the evaluation log, compare it with the records and the published heads"
    )
    check.add_argument("--page-size", type=int, default=PAGE_SIZE, help="entries checked per query")
    check.add_argument(
        "--jobs", type=int, default=JOBS, help="PostgreSQL connections checking ranges side by side (one snapshot)"
    )
    check.set_defaults(func=handler)


async def verify_store(url: str, *, page_size: int = PAGE_SIZE, jobs: int = JOBS) -> Verified:
    from gateway.audit.verify import verify
    from gateway.store.db import Store

    store = Store.connect(url, pool_size=jobs + 1)
    try:
        return await verify(store.engine, page_size=page_size, jobs=jobs)
    finally:
        await store.close()


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary when the log is intact; 1 naming the first mismatch otherwise."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if args.page_size < 1 or args.jobs < 1:
        print("gateway: --page-size and --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(verify_store(settings.database_url, page_size=args.page_size, jobs=args.jobs))
    except (OperationalError, ProgrammingError) as exc:  # no such table, database unreachable
        print(
            f"gateway: cannot read the evaluation log ({exc.orig}); is the schema migrated (gateway migrate)?",
            file=sys.stderr,
        )
        return 2
    print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
