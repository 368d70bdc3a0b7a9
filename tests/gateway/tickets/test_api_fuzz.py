"""Drive the department API from its own OpenAPI document with generated inputs, valid and invalid:
whatever is sent, no answer is a server error.

The app runs in a thread with its own event loop on a loopback port, so schemathesis' blocking HTTP
calls never wait on the loop that serves them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from gateway.app import create_app
from gateway.clock import FrozenClock
from gateway.wiring.fraud import FRAUD_DETECTOR
from gateway.settings import Settings
from gateway.web.keys import STORE
from tests.conftest import START, World, case_payload, register_world

EXAMPLES_PER_OPERATION = 40  # per generation mode; the whole run stays well under a minute per backend
CALLERS = ("hanbin", "hanbin-market", "city", "hanyin")


class LiveServer:
    """The gateway on 127.0.0.1:<free port>, served from a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-gateway", daemon=True)
        self.runner = web.AppRunner(app)
        self.url = ""

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def live(settings: Settings) -> Iterator[tuple[LiveServer, World]]:
    clock = FrozenClock(START)
    server = LiveServer(create_app(settings, clock=clock, migrate=False, run_background=False))
    server.start()
    try:
        world = server.run(register_world(server.app[STORE], clock))
        # A few real tickets, so that generated ids (the documented example is 1) reach real rows.
        for n in range(3):
            answer = requests.post(
                f"{server.url}/api/v1/cases", json=case_payload(f"FZ-{n}"), headers=world.auth("hanbin-market"), timeout=10
            )
            token = answer.json()["invitation"]["token"]
            rated = requests.post(f"{server.url}/r/{token}", json={"level": 2, "reasons": [213]}, timeout=10)
            assert rated.status_code == 201, rated.text
        # A fraud flag, so that generated flag ids reach a real one: the rater's number is on the staff list.
        contacts = {"org_code": "hanbin-market", "contacts": [{"staff_id": "HB-017", "phone": "13812341234"}]}
        assert requests.post(f"{server.url}/api/v1/fraud/staff-contacts", json=contacts, headers=world.auth("hanbin"),
                             timeout=10).status_code == 200
        answer = requests.post(f"{server.url}/api/v1/cases", json=case_payload("FZ-9"),
                               headers=world.auth("hanbin-market"), timeout=10)
        token = answer.json()["invitation"]["token"]
        assert requests.post(f"{server.url}/r/{token}", json={"level": 5}, timeout=10).status_code == 201
        detector = server.app[FRAUD_DETECTOR]
        detector.lag = timedelta(0)
        assert server.run(detector.run_until_idle()).flags >= 1
        yield server, world
    finally:
        server.stop()


def test_no_input_makes_a_server_error(live: tuple[LiveServer, World]) -> None:
    server, world = live
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {o.label for o in operations}
    assert {"POST /api/v1/cases", "POST /api/v1/cases/batch", "GET /api/v1/evaluations"} <= labels
    assert "POST /api/v1/tickets/{id}/actions" in labels
    assert {"GET /api/v1/fraud/flags/{id}", "POST /api/v1/fraud/flags/{id}/ruling"} <= labels
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode), caller=st.sampled_from(CALLERS))
                @hypothesis_settings(
                    max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: schemathesis.Case, caller: str) -> None:
                    case.call_and_validate(
                        base_url=server.url, session=session, headers=world.auth(caller), checks=[not_a_server_error]
                    )

                check()
