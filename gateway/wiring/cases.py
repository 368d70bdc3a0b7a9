"""The case writer as part of the app (wiring for gateway.app): one per process, closed at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.evaluations.intake import CaseWriter
from gateway.web.keys import DEPS, STORE

CASE_WRITER: web.AppKey[CaseWriter] = web.AppKey("case_writer")


async def cases_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the writer that groups concurrent single case reports into one transaction."""
    writer = CaseWriter(app[STORE], app[DEPS])
    app[CASE_WRITER] = writer
    yield
    await writer.close()
