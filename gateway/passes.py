"""The shape of every background loop the app owns (STYLE 12): passes, for ever, and a failed pass
is logged and followed by the next one instead of killing the loop. A loop stopped (cancelled) in the
middle of a pass lets that pass finish first, for up to `STOP_GRACE_SECONDS`: shutting down then does
not cut a transaction or an HTTP send in half (either would be safe, but noisy, and a cut send is
retried later as a possible duplicate)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0


async def _finish_pass(one_pass: Callable[[], Awaitable[int | None]], grace_seconds: float) -> int | None:
    """Run one pass; a cancellation that comes during it waits for it (up to the grace), then goes on."""
    running = asyncio.ensure_future(one_pass())
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if not running.done():
            try:
                await asyncio.wait_for(running, timeout=grace_seconds)
            except TimeoutError:
                log.warning("a pass outlasted the %.0f s stop grace and was cut", grace_seconds)
            except Exception:  # the pass failed while stopping: the loop ends anyway
                log.exception("the last pass failed while stopping")
        raise


async def run_passes(
    one_pass: Callable[[], Awaitable[int | None]],
    *,
    interval_seconds: float,
    what: str,
    wake: asyncio.Event | None = None,
    grace_seconds: float = STOP_GRACE_SECONDS,
) -> None:
    """Run `one_pass` for ever. With `wake`, a pass that handled something (returned more than 0) is
    followed at once by the next, and an idle loop waits for `wake` or the interval, whichever comes
    first; without it, passes are spaced by the interval."""
    while True:
        if wake is not None:
            wake.clear()  # before the pass: a wake that comes during it starts the next one
        try:
            handled = await _finish_pass(one_pass, grace_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed; trying again", what)
            handled = 0
        if wake is None:
            await asyncio.sleep(interval_seconds)
            continue
        if handled:
            continue
        try:
            await asyncio.wait_for(wake.wait(), timeout=interval_seconds)
        except TimeoutError:
            pass
