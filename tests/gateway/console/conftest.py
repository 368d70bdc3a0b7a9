"""Console fixtures: people with passwords in the test world, and a signed-in browser-like client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

import pytest

from gateway.console.accounts import add_user, set_password
from gateway.web.keys import DEPS, STORE
from tests.conftest import World, case_payload

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')

# login, organisation, role
PEOPLE = [
    ("hb.clerk", "hanbin", "clerk"),
    ("hb.chief", "hanbin", "supervisor"),
    ("hy.clerk", "hanyin", "clerk"),
    ("market.clerk", "hanbin-market", "clerk"),
    ("ops.admin", "operator", "admin"),
]


# Each person's argon2id hash (64 MiB, 3 passes: a sixth of a second of CPU) is made once per run and
# reused by the later tests' worlds; signing in still verifies it in full.
_HASHES: dict[str, str] = {}


async def add_people(store: Any, at: Any) -> None:
    async with store.transaction() as session:
        for login, org, role in PEOPLE:
            user, _ = await add_user(session, org_code=org, login=login, role=role, at=at)
            hashed = _HASHES.get(login)
            if hashed is None:
                set_password(user, PASSWORD, at)
                _HASHES[login] = user.password_hash or ""
            else:  # what set_password does, with the hash already made
                user.password_hash, user.password_changed_at = hashed, at
                user.setup_token_hash = user.setup_expires_at = None


@pytest.fixture
async def people(client, world: World) -> World:  # type: ignore[no-untyped-def]
    await add_people(client.app[STORE], client.app[DEPS].clock.now())
    return world


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


class Browser:
    """The aiohttp test client used like a browser without JavaScript: GET pages, POST their forms."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        resp = await self.client.get(path, **kw)
        html = await resp.text()
        if "csrf_token" in html:
            self.csrf = csrf_of(html)
        return resp.status, html

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, Any]], *, csrf: bool = True, **kw: Any
    ) -> tuple[int, str]:
        items = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            items.append(("csrf_token", self.csrf))
        resp = await self.client.post(path, data=items, **kw)
        html = await resp.text()
        if "csrf_token" in html:
            self.csrf = csrf_of(html)
        return resp.status, html

    async def sign_in(self, login: str, password: str = PASSWORD) -> tuple[int, str]:
        await self.get("/console/signin")
        return await self.post("/console/signin", {"login": login, "password": password})


@pytest.fixture
def browser(client) -> Browser:  # type: ignore[no-untyped-def]
    return Browser(client)


@pytest.fixture
async def new_browser(client) -> AsyncIterator[Callable[[], Awaitable[Browser]]]:  # type: ignore[no-untyped-def]
    """Another person's browser: a client of its own (its own cookies) on the same server."""
    opened: list[TestClient] = []

    async def open_one() -> Browser:
        other = TestClient(client.server)
        await other.start_server()
        opened.append(other)
        return Browser(other)

    yield open_one
    for other in opened:
        await other.close()


async def make_ticket(
    client: Any,
    world: World,
    case_no: str,
    *,
    org: str = "hanbin-market",
    region: str = "610902",
    text: str = "",
    phone: str = "13812341234",
) -> int:
    payload = case_payload(
        case_no,
        org_code=org,
        region_code=region,
        citizen={"phone": phone},
        completed_at=client.app[DEPS].clock.now().isoformat(),
    )
    resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(org))
    body = await resp.json()
    assert resp.status == 201, body
    resp = await client.post(f"/r/{body['invitation']['token']}", json={"level": 2, "reasons": [213], "text": text})
    rated = await resp.json()
    assert resp.status == 201, rated
    return int(rated["ticket_id"])
