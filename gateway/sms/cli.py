"""`gateway inbox …`: the operator's view of the SMS inbox, and what to do with messages set aside.

    gateway inbox                 # pending (with the oldest one's age) and set-aside counts
    gateway inbox failed          # the messages set aside: id, when, sender (masked), tries, error, text
    gateway inbox retry ID …      # back into the inbox: processed next, as if it had just come in
    gateway inbox purge ID …      # clear the text and the encrypted number of a set-aside message

A set-aside message keeps its text and encrypted number until it is retried (and then processed) or
purged. The row itself stays: its MessageSid keeps Twilio's retries from acting twice. A retried
message is read against the conversation as it stands now (its sender may have written since); it
is refused while that sender has messages waiting, so one citizen's messages still run one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.privacy import mask_phone, redact
from gateway.settings import Settings
from gateway.sms.inbox import inbox_status
from gateway.store.db import Store
from gateway.store.models import InboundMessage, inbox_state_is

m = InboundMessage
SET_ASIDE = inbox_state_is(col(m.state), "dead")


async def set_aside(store: Store, deps: Deps, limit: int = 100) -> list[dict[str, object]]:
    async with store.transaction() as session:
        rows = (await session.exec(select(m).where(SET_ASIDE).order_by(col(m.id)).limit(limit))).all()
    out: list[dict[str, object]] = []
    for row in rows:
        try:
            sender = mask_phone(deps.vault.decrypt(row.sender_enc)) if row.sender_enc else "(purged)"
        except ValueError:
            sender = "(unreadable with this GATEWAY_SECRET_KEY)"
        out.append(
            {
                "id": row.id,
                "received_at": as_utc(row.received_at).isoformat(),
                "sender": sender,
                "attempts": row.attempts,
                "error": row.error,
                "text": redact((row.body or "")[:70]),
            }
        )
    return out


async def retry(store: Store, ids: list[int]) -> int:
    """Put set-aside messages back as new. Refused for a purged one (no number left to answer), and
    while its sender has messages waiting (they would run side by side)."""
    waiting = aliased(InboundMessage)
    sender_busy = (
        select(waiting.id)
        .where(waiting.sender_hash == m.sender_hash, inbox_state_is(col(waiting.state), "pending"))
        .exists()
    )
    async with store.transaction() as session:
        done = await session.exec(
            update(m)
            .where(col(m.id).in_(ids), SET_ASIDE, ~sender_busy)
            .values(state="pending", processed_at=None, attempts=0, error=None, lease_until=None)
        )
        return int(done.rowcount)


async def purge(store: Store, ids: list[int]) -> int:
    async with store.transaction() as session:
        done = await session.exec(
            update(m).where(col(m.id).in_(ids), SET_ASIDE).values(state="purged", body=None, sender_enc=None)
        )
        return int(done.rowcount)


def run(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> int:
        store = Store.connect(settings.database_url)
        try:
            if settings.is_sqlite:
                from gateway.store.migrate import upgrade

                await upgrade(store.engine)
            deps = Deps.build(settings)
            action = args.inbox_command or "status"
            if action == "status":
                status = await inbox_status(store, deps.clock.now())
                print("  ".join(f"{k}: {v}" for k, v in status.items()))
            elif action == "failed":
                rows = await set_aside(store, deps, args.limit)
                for row in rows:
                    print(
                        f"{row['id']}\t{row['received_at']}\t{row['sender']}\ttries {row['attempts']}\t{row['error']}\t{row['text']!r}"
                    )
                if not rows:
                    print("no message set aside")
            elif action == "retry":
                done = await retry(store, args.ids)
                print(f"{done} of {len(args.ids)} back in the inbox")
                if done < len(args.ids):
                    print(
                        "the others are not set aside, were purged, or their sender has messages waiting (try again later)"
                    )
            elif action == "purge":
                print(f"{await purge(store, args.ids)} of {len(args.ids)} purged")
            return 0
        finally:
            await store.close()

    return asyncio.run(go())


def add_parser(sub: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]) -> None:
    inbox = sub.add_parser("inbox", help="the SMS inbox: backlog, messages set aside, retry or purge them")
    inbox.set_defaults(func=handler, inbox_command=None)
    actions = inbox.add_subparsers(dest="inbox_command")
    actions.add_parser("status", help="pending and set-aside counts (the default)")
    failed = actions.add_parser("failed", help="list the messages set aside after repeated failures")
    failed.add_argument("--limit", type=int, default=100)
    for name, summary in (
        ("retry", "put set-aside messages back into the inbox"),
        ("purge", "clear a set-aside message's text and number"),
    ):
        action = actions.add_parser(name, help=summary)
        action.add_argument("ids", nargs="+", type=int)
