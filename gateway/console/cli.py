"""`gateway user add|disable|enable|reset|list`: console accounts from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from gateway.settings import Settings


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.console.accounts import (
        AccountError,
        add_user,
        disable_user,
        enable_user,
        list_users,
        reset_user,
        setup_link,
    )
    from gateway.console.sessions import DatabaseSessions, Lifetime, RedisSessions, Sessions
    from gateway.store.db import Store
    from gateway.store.migrate import upgrade

    store = Store.connect(settings.database_url)
    redis: Any = None
    try:
        if settings.is_sqlite:
            await upgrade(store.engine)
        at = datetime.now(timezone.utc)
        user_id: int | None = None
        try:
            async with store.transaction() as session:
                if args.user_command == "list":
                    for user, org in await list_users(session):
                        state = (
                            "disabled"
                            if user.disabled_at
                            else ("awaiting password" if not user.password_hash else "active")
                        )
                        print(f"{user.login}\t{org.code}\t{user.role}\t{state}")
                    return 0
                if args.user_command == "add":
                    user, token = await add_user(session, org_code=args.org, login=args.name, role=args.role, at=at)
                    print(f"added {args.role} {user.login} of {args.org}")
                elif args.user_command == "reset":
                    user, token = await reset_user(session, login=args.name, at=at)
                    user_id = user.id
                    print(f"password of {user.login} cleared; their sessions end")
                elif args.user_command == "disable":
                    user = await disable_user(session, login=args.name, at=at)
                    user_id, token = user.id, ""
                    print(f"disabled {user.login}; their sessions end")
                else:
                    user = await enable_user(session, login=args.name)
                    token = ""
                    print(f"enabled {user.login}")
        except AccountError as exc:
            print(f"gateway: {exc.message}", file=sys.stderr)
            return 2
        if user_id is not None:
            sessions: Sessions
            if settings.redis_url:
                import redis.asyncio as aioredis

                redis = aioredis.from_url(settings.redis_url, decode_responses=True)
                sessions = RedisSessions(redis, Lifetime(1, 1))
            else:
                sessions = DatabaseSessions(store, Lifetime(1, 1))
            await sessions.end_all(user_id)
        if token:
            print("one-time sign-in link (valid 72 hours; opens a page to set the password):")
            print(setup_link(settings.public_url, token))
        return 0
    finally:
        if redis is not None:
            await redis.aclose()
        await store.close()


def run(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    user = sub.add_parser("user", help="console accounts (people)").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="add an account and print its one-time sign-in link")
    add.add_argument("--org", required=True, help="code of the person's organisation")
    add.add_argument("--name", required=True, help="the sign-in name")
    add.add_argument(
        "--role", required=True, choices=["clerk", "supervisor", "admin"], help="admin: operator staff only"
    )
    add.set_defaults(func=func)
    for name, text in (
        ("disable", "disable an account and end its sessions"),
        ("enable", "enable a disabled account"),
        ("reset", "forget the password, end the sessions, print a new sign-in link"),
    ):
        cmd = user.add_parser(name, help=text)
        cmd.add_argument("--name", required=True, help="the sign-in name")
        cmd.set_defaults(func=func)
    user.add_parser("list", help="list accounts").set_defaults(func=func)
