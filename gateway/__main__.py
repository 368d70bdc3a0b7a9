"""Command line: `gateway serve | worker | migrate | org add | calendar due | demo | bot | inbox | campaign | audit`."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted(*_args: object) -> None:
    # An exit at once, not an exception: a SystemExit raised where the signal lands can be swallowed (in a
    # finaliser the garbage collector runs, say), and start-up would go on. Nothing is open that a crash
    # would not leave safe: the store's writes are transactions.
    sys.stderr.write("gateway: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    # `python -m gateway`: Ctrl-C while the command is still loading gives one line instead of a
    # traceback from whichever module was being imported (main() covers the rest; commands that run an
    # event loop install their own handling once it runs).
    signal.signal(signal.SIGINT, _interrupted)

import argparse
import asyncio
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from gateway.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        messages = exc.errors(include_url=False) if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
        for err in messages:
            where = ".".join(str(p) for p in err.get("loc", ())) if err.get("loc") else "settings"
            print(f"gateway: cannot start: {where}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.logs import configure

    settings = _settings()
    configure(settings.log_level)
    app = create_app(settings, migrate=settings.is_sqlite or args.migrate)
    app.on_startup.append(_settle)  # after the app's own start-up (its cleanup contexts run first)
    host, port = args.host or settings.host, args.port or settings.port
    try:
        web.run_app(
            app, host=host, port=port, print=lambda m: print(m.replace("======== ", "").replace(" ========", ""))
        )
    except OSError as exc:  # the port is taken, the address is not this machine's, no permission
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        print(f"gateway: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    return 0


async def _settle(_app: object) -> None:
    from gateway.collector import settle

    settle()


def cmd_worker(_args: argparse.Namespace) -> int:
    from gateway.logs import configure
    from gateway.worker import run_worker

    settings = _settings()
    configure(settings.log_level)
    asyncio.run(run_worker(settings))
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from gateway.store.db import Store
    from gateway.store.migrate import upgrade

    settings = _settings()

    async def run() -> None:
        store = Store.connect(settings.database_url)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(run())
    print("schema is up to date")
    return 0


def cmd_org_add(args: argparse.Namespace) -> int:
    from gateway.orgs import OrgError, add_org, issue_key
    from gateway.store.db import Store
    from gateway.store.migrate import upgrade

    settings = _settings()

    async def run() -> str:
        store = Store.connect(settings.database_url)
        try:
            if settings.is_sqlite:
                await upgrade(store.engine)
            at = datetime.now(timezone.utc)
            async with store.transaction() as session:
                org = await add_org(
                    session,
                    code=args.code,
                    name=args.name,
                    kind=args.kind,
                    region_code=args.region,
                    parent_code=args.parent,
                    at=at,
                )
                return await issue_key(session, org=org, label="created by gateway org add", at=at)
        finally:
            await store.close()

    try:
        key = asyncio.run(run())
    except OrgError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    print(f"registered {args.kind} {args.code} ({args.name}), region {args.region}")
    print("API key (shown once, store it now):")
    print(key)
    return 0


def cmd_calendar_due(args: argparse.Namespace) -> int:
    from gateway.tickets.calendar import CalendarFileError, calendar_due_command

    path = Path(args.file) if args.file else _settings().calendar_file
    try:
        print(calendar_due_command(args.date, args.working_days, path))
    except (ValueError, CalendarFileError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return asyncio.run(run_demo(database=args.database))


def cmd_bot_set_webhook(args: argparse.Namespace) -> int:
    from gateway.bot.webhook import WebhookSetupError, register_webhook

    settings = _settings()
    try:
        url, updates = asyncio.run(register_webhook(settings, drop_pending_updates=args.drop_pending_updates))
    except WebhookSetupError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    print(f"webhook set: {url}")
    print(f"updates: {', '.join(updates)}")
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    from gateway.logs import configure

    settings = _settings()
    configure(settings.log_level)
    return int(args.campaign_func(settings, args))


def cmd_inbox(args: argparse.Namespace) -> int:
    from gateway.logs import configure
    from gateway.sms.cli import run

    settings = _settings()
    configure(settings.log_level)
    return run(settings, args)


def cmd_upload(args: argparse.Namespace) -> int:
    from gateway.logs import configure
    from gateway.upload.cli import run

    settings = _settings()
    configure(settings.log_level)
    return run(settings, args)


def cmd_user(args: argparse.Namespace) -> int:
    from gateway.console.cli import run

    return run(_settings(), args)


def cmd_stats(args: argparse.Namespace) -> int:
    from gateway.stats.cli import run

    return run(_settings(), args)


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.audit.cli import run

    return run(_settings(), args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="好差评 evaluation gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web service and the dispatcher")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--migrate", action="store_true", help="migrate a PostgreSQL schema first (SQLite always is)")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the dispatcher, the SMS inbox and the timers only").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=cmd_migrate)

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="org_command", required=True)
    add = org.add_parser("add", help="register an organisation and print its API key once")
    add.add_argument("--code", required=True)
    add.add_argument("--name", required=True)
    add.add_argument(
        "--kind", required=True, choices=["operator", "city_bureau", "county_dept", "unit", "platform_builder"]
    )
    add.add_argument("--region", required=True, help="six-digit 行政区划 code, e.g. 610902")
    add.add_argument("--parent", help="code of the parent organisation")
    add.set_defaults(func=cmd_org_add)

    cal = sub.add_parser("calendar", help="the working-day calendar").add_subparsers(dest="cal_command", required=True)
    due = cal.add_parser("due", help="print the due date N working days after DATE")
    due.add_argument("date", help="YYYY-MM-DD, the day of receipt (not counted)")
    due.add_argument("--working-days", type=int, required=True)
    due.add_argument("--file", help="operator schedule file (default: GATEWAY_CALENDAR_FILE)")
    due.set_defaults(func=cmd_calendar_due)

    bot = sub.add_parser("bot", help="the Telegram bot").add_subparsers(dest="bot_command", required=True)
    hook = bot.add_parser(
        "set-webhook", help="register GATEWAY_PUBLIC_URL/webhooks/telegram with Telegram, with the secret"
    )
    hook.add_argument("--drop-pending-updates", action="store_true", help="discard updates Telegram holds for the bot")
    hook.set_defaults(func=cmd_bot_set_webhook)

    from gateway.sms.cli import add_parser as add_inbox_parser

    add_inbox_parser(sub, cmd_inbox)

    from gateway.wiring.campaign_cli import add_parser as add_campaign_parser

    add_campaign_parser(sub, cmd_campaign)

    from gateway.upload.cli import add_parser as add_upload_parser

    add_upload_parser(sub, cmd_upload)

    from gateway.console.cli import add_parser as add_user_parser

    add_user_parser(sub, cmd_user)

    from gateway.stats.cli import add_parser as add_stats_parser

    add_stats_parser(sub, cmd_stats)

    from gateway.audit.cli import add_parser as add_audit_parser

    add_audit_parser(sub, cmd_audit)

    demo = sub.add_parser("demo", help="a scripted end-to-end run on a throwaway SQLite database")
    demo.add_argument("--database", help="SQLite file to use (default: a temporary file)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C before a command had set up its own handling (e.g. while starting)
        print("gateway: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
