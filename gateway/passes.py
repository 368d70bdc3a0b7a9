"""The shape of every background loop the app owns (STYLE 12): passes, for ever, and a failed pass
is logged and followed by the next one instead of killing the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_passes(
    one_pass: Callable[[], Awaitable[int | None]],
    *,
    interval_seconds: float,
    what: str,
    wake: asyncio.Event | None = None,
) -> None:
    """Run `one_pass` for ever. With `wake`, a pass that handled something (returned more than 0) is
    followed at once by the next, and an idle loop waits for `wake` or the interval, whichever comes
    first; without it, passes are spaced by the interval."""
    while True:
        if wake is not None:
            wake.clear()  # before the pass: a wake that comes during it starts the next one
        try:
            handled = await one_pass()
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
