"""`gateway campaign …`: start a callback campaign and follow it with a progress bar, read or steer one.

The CLI is an operator's tool: whoever runs it already holds the database URL, so `--org CODE` names
the approval department directly instead of presenting its API key. The department's jurisdiction
applies exactly as through the API (the same service functions run).

`start` follows the campaign until nothing is left to send (pending and queued both 0); answers keep
coming in afterwards through the running gateway, and `status` shows them. With `--dispatch` this
process also feeds the campaign and runs a dispatcher (for the embedded default, or when no
`gateway serve`/`worker` is running); without it, the bar follows the work of the running gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from gateway.callbacks.errors import CampaignError
from gateway.callbacks.feeder import CampaignFeeder
from gateway.callbacks.schemas import CampaignCounts, CampaignIn
from gateway.callbacks.service import (
    campaign_counts,
    campaign_read,
    cancel_campaign,
    create_campaign,
    pause_campaign,
    resume_campaign,
    visible_campaign,
)
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.orgs import Caller, org_by_code
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.store.models import Campaign

POLL_SECONDS = 0.5


class CliError(Exception):
    """Something the operator must fix; printed without a traceback, exit status 2."""


@dataclass
class Tools:
    store: Store
    deps: Deps
    feeder: CampaignFeeder | None = None


@asynccontextmanager
async def _tools(settings: Settings, *, dispatch: bool) -> AsyncIterator[Tools]:
    """The store and deps; with `dispatch`, the whole app's background parts (no listening socket)."""
    if not dispatch:
        store = Store.connect(settings.database_url)
        try:
            if settings.is_sqlite:
                from gateway.store.migrate import upgrade

                await upgrade(store.engine)
            yield Tools(store=store, deps=Deps.build(settings))
        finally:
            await store.close()
        return
    from aiohttp import web

    from gateway.app import create_app, start_task
    from gateway.web.keys import DEPS, DISPATCHER, STORE
    from gateway.wiring.campaigns import CAMPAIGN_FEEDER

    app = create_app(settings, migrate=settings.is_sqlite, run_background=False)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        feeder = app[CAMPAIGN_FEEDER]
        start_task(app, app[DISPATCHER].run_forever(settings.dispatch_interval_seconds), name="dispatcher")
        yield Tools(store=app[STORE], deps=app[DEPS], feeder=feeder)
    finally:
        await runner.cleanup()  # cancels the dispatcher task


async def _caller(store: Store, code: str) -> Caller:
    async with store.transaction() as session:
        org = await org_by_code(session, code)
    if org is None:
        raise CliError(f"organisation {code!r} is not registered (see `gateway org add`)")
    return Caller.of(org)


def _body(args: argparse.Namespace) -> CampaignIn:
    values: dict[str, Any] = {
        "name": args.name or "",
        "resolved_from": args.resolved_from,
        "resolved_to": args.resolved_to,
        "region_code": args.region,
        "unit": args.unit,
        "level": args.level,
        "starts_at": args.starts_at,
    }
    if args.tickets:
        try:
            values["ticket_ids"] = [int(part) for part in args.tickets.replace(",", " ").split()]
        except ValueError:
            raise CliError("--tickets takes ticket ids separated by commas, e.g. 12,15,31") from None
    try:
        return CampaignIn.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "campaign"
        raise CliError(f"{where}: {first['msg']}") from None


def summary(campaign: Campaign, counts: CampaignCounts) -> str:
    rate = f"{counts.satisfied / counts.answered:.1%}" if counts.answered else "n/a"
    return (
        f"campaign {campaign.id} ({campaign.status}): {counts.targets} targets · sent {counts.sent} · "
        f"delivered {counts.delivered} · failed {counts.failed} · skipped {counts.skipped} · "
        f"waiting {counts.pending + counts.queued} · answered {counts.answered} "
        f"(satisfied {counts.satisfied}, unsatisfied {counts.unsatisfied}) · no answer {counts.no_answer} · "
        f"satisfaction rate {rate}"
    )


async def _snapshot(store: Store, campaign_id: int) -> tuple[Campaign, CampaignCounts]:
    async with store.transaction() as session:
        campaign = await session.get(Campaign, campaign_id, populate_existing=True)
        if campaign is None:
            raise BrokenInvariant("campaign is missing")
        return campaign, await campaign_counts(session, campaign_id)


async def follow(tools: Tools, campaign_id: int, *, out: Any = sys.stderr) -> tuple[Campaign, CampaignCounts]:
    """Show a progress bar until nothing of the campaign is left to send."""
    campaign, counts = await _snapshot(tools.store, campaign_id)
    quiet_noted = False
    with tqdm(
        total=counts.targets,
        unit="target",
        desc=f"campaign {campaign_id}",
        file=out,
        mininterval=0.2,
        dynamic_ncols=True,
    ) as bar:
        while True:
            if tools.feeder is not None:
                await tools.feeder.run_once()
            campaign, counts = await _snapshot(tools.store, campaign_id)
            handled = counts.targets - counts.pending - counts.queued
            bar.set_postfix(
                sent=counts.sent, failed=counts.failed, skipped=counts.skipped, answered=counts.answered, refresh=False
            )
            bar.update(handled - bar.n)
            if campaign.status in ("cancelled", "finished") or (counts.pending == 0 and counts.queued == 0):
                return campaign, counts
            now = tools.deps.clock.now()
            if not quiet_noted and tools.deps.quiet.is_quiet(now):
                opens = tools.deps.quiet.next_open(now)
                bar.write(
                    f"quiet hours ({tools.deps.settings.quiet_hours} {tools.deps.settings.timezone}): "
                    f"surveys wait until {opens.astimezone(tools.deps.calendar.tz):%Y-%m-%d %H:%M}"
                    if opens
                    else "quiet hours"
                )
                quiet_noted = True
            await asyncio.sleep(POLL_SECONDS)


async def start(settings: Settings, args: argparse.Namespace) -> int:
    body = _body(args)
    async with _tools(settings, dispatch=args.dispatch) as tools:
        caller = await _caller(tools.store, args.org)
        async with tools.store.transaction() as session:
            campaign, not_targeted = await create_campaign(session, caller=caller, body=body, deps=tools.deps)
            read = await campaign_read(session, campaign=campaign, not_targeted=not_targeted)
        print(
            f"campaign {read.id} created by {read.org}: {read.counts.targets} targets, {read.status}"
            + (
                f", starts {as_utc(campaign.starts_at).astimezone(tools.deps.calendar.tz):%Y-%m-%d %H:%M}"
                if read.status == "scheduled"
                else ""
            ),
            flush=True,
        )
        if not_targeted:
            print(
                f"not taken ({len(not_targeted)}): {', '.join(map(str, not_targeted[:50]))}"
                + (" …" if len(not_targeted) > 50 else ""),
                flush=True,
            )
        if args.no_follow:
            return 0
        if campaign.id is None:
            raise BrokenInvariant("campaign.id is missing")
        try:
            campaign, counts = await follow(tools, campaign.id)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print(f"stopped following; campaign {campaign.id} carries on in the running gateway", file=sys.stderr)
            return 130
        print(summary(campaign, counts))
        print(f"answers keep coming in; see `gateway campaign status {campaign.id} --org {args.org}`")
    return 0


async def status(settings: Settings, args: argparse.Namespace) -> int:
    async with _tools(settings, dispatch=False) as tools:
        caller = await _caller(tools.store, args.org)
        async with tools.store.transaction() as session:
            campaign = await visible_campaign(session, caller=caller, campaign_id=args.id)
            counts = await campaign_counts(session, args.id)
        print(summary(campaign, counts))
    return 0


_ACTIONS = {"pause": pause_campaign, "resume": resume_campaign, "cancel": cancel_campaign}


async def act(settings: Settings, args: argparse.Namespace) -> int:
    async with _tools(settings, dispatch=False) as tools:
        caller = await _caller(tools.store, args.org)
        async with tools.store.transaction() as session:
            campaign = await _ACTIONS[args.campaign_command](
                session, caller=caller, campaign_id=args.id, deps=tools.deps
            )
            counts = await campaign_counts(session, args.id)
        print(summary(campaign, counts))
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point from `gateway.__main__`; domain refusals print one line and exit 2."""
    command = {"start": start, "status": status}.get(args.campaign_command, act)
    try:
        return asyncio.run(command(settings, args))
    except CliError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except CampaignError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """The `campaign` subcommands; `func` is the CLI's entry for them (it reads the settings)."""
    campaign = sub.add_parser("campaign", help="callback-survey campaigns (回访)").add_subparsers(
        dest="campaign_command", required=True
    )
    begin = campaign.add_parser("start", help="start a campaign and follow it with a progress bar")
    begin.add_argument("--org", required=True, help="code of the approval department running it")
    begin.add_argument("--name", help="a label")
    begin.add_argument(
        "--resolved-from", type=date.fromisoformat, metavar="YYYY-MM-DD", help="resolved on or after (local day)"
    )
    begin.add_argument(
        "--resolved-to", type=date.fromisoformat, metavar="YYYY-MM-DD", help="resolved on or before (local day)"
    )
    begin.add_argument("--region", help="six-digit 行政区划 code of the tickets")
    begin.add_argument("--unit", help="org code of the handling unit")
    begin.add_argument("--level", type=int, choices=[1, 2], help="rating level")
    begin.add_argument("--tickets", help="explicit ticket ids, comma-separated")
    begin.add_argument(
        "--starts-at",
        type=datetime.fromisoformat,
        metavar="ISO-TIME",
        help="when sending may begin, with its UTC offset (e.g. 2026-03-05T09:00+08:00)",
    )
    begin.add_argument("--dispatch", action="store_true", help="feed and send from this process too")
    begin.add_argument("--no-follow", action="store_true", help="create it and return")
    begin.set_defaults(func=func, campaign_func=run)
    show = campaign.add_parser("status", help="print a campaign's progress and satisfaction rate")
    show.add_argument("id", type=int)
    show.add_argument("--org", required=True)
    show.set_defaults(func=func, campaign_func=run)
    for name, text in (
        ("pause", "stop sending (resume carries on)"),
        ("resume", "carry on sending"),
        ("cancel", "send nothing more"),
    ):
        one = campaign.add_parser(name, help=text)
        one.add_argument("id", type=int)
        one.add_argument("--org", required=True)
        one.set_defaults(func=func, campaign_func=run)
