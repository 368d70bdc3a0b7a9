"""`gateway worker`: the dispatcher and timers without the web endpoints."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from gateway.app import create_app
from gateway.collector import settle
from gateway.settings import Settings


async def run_worker(settings: Settings) -> None:
    """Start the app's background parts (no listening socket) until SIGINT or SIGTERM."""
    app = create_app(settings, migrate=settings.is_sqlite, run_background=True)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # runs the cleanup contexts: store, redis, providers, dispatcher
    settle()  # a long-running process: start-up's objects frozen for the collector
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
