"""Upload tests: the app runs with the shipped `provincial` profile against a FakeProvince on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from gateway.settings import Settings, load_settings
from gateway.upload.models import UploadRecord
from gateway.upload.profile import PROFILES_DIR
from gateway.wiring.upload import UPLOAD_FEED
from gateway.web.keys import STORE
from tests.conftest import World, case_payload
from tests.fakes.province_api import APP_KEY, APP_SECRET, FakeProvince

_numbers = itertools.count(1)


def province_settings(database_url: str, base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "public_url": "http://gateway.test", "run_dispatcher": False,
        "province_profile": "provincial", "province_base_url": base_url,
        "province_app_key": APP_KEY, "province_app_secret": APP_SECRET,
    }
    values.update(overrides)
    return load_settings(**values)


def profile_variant(tmp_path: Path, name: str = "provincial", **replace: str) -> str:
    """A copy of a shipped profile with some lines replaced (old line → new line); returns its path."""
    text = (PROFILES_DIR / f"{name}.toml").read_text(encoding="utf-8")
    for old, new in replace.items():
        if old not in text:
            raise KeyError(old)
        text = text.replace(old, new)
    path = tmp_path / f"{name}-variant.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def settings(database_url: str, fake_province: FakeProvince) -> Settings:
    return province_settings(database_url, fake_province.url)


@pytest.fixture
def feed(client):  # type: ignore[no-untyped-def]
    feed = client.app[UPLOAD_FEED]
    assert feed is not None
    return feed


Rate = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def rate(client, world: World) -> Rate:  # type: ignore[no-untyped-def]
    """Report a case and rate it through the page; returns the rating's answer."""

    async def go(level: int = 2, *, reasons: list[int] | None = None, org: str = "hanbin-market",
                 item_code: str = "11610902MB0001", **extra: Any) -> dict[str, Any]:
        payload = case_payload(f"U-{next(_numbers):05d}", org_code=org, item_code=item_code)
        resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(org))
        body = await resp.json()
        assert resp.status == 201, body
        rating: dict[str, Any] = {"level": level, **extra}
        if reasons is not None:
            rating["reasons"] = reasons
        resp = await client.post(f"/r/{body['invitation']['token']}", json=rating)
        rated = await resp.json()
        assert resp.status == 201, rated
        return rated

    return go


async def upload_rows(client) -> list[UploadRecord]:  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(UploadRecord).order_by(col(UploadRecord.id)))).all())
