"""Small loopback servers that speak the providers' wire formats (Twilio REST, Telegram Bot API).

The real SDKs (twilio, aiogram) are pointed at them in tests: the gateway's code runs unchanged and
the fakes record what they were sent. `LoopbackServer` is the shared start/stop machinery.
"""

from __future__ import annotations

import asyncio
from typing import Self

from aiohttp import web


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 and a random port, used as an async context manager."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.url = ""

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._closing.clear()
        # A short shutdown timeout: a test that injected a delay must not wait for it at teardown.
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def pause(self, seconds: float) -> None:
        """Sleep in a handler, cut short when the server closes."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def until(self, event: asyncio.Event) -> None:
        """Wait in a handler for a test's signal, cut short when the server closes."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
