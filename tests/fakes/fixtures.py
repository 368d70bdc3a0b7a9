"""Pytest fixtures for the fake provider servers; tests/conftest.py imports them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from gateway.upload.profile import load_profile

from .province_api import FakeProvince
from .telegram_api import FakeTelegram
from .twilio_api import FakeTwilio


@pytest_asyncio.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    """A FakeTwilio on a loopback port, with the default test account SID and auth token."""
    async with FakeTwilio() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A FakeTelegram on a loopback port, answering for the default test bot token."""
    async with FakeTelegram() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_province() -> AsyncIterator[FakeProvince]:
    """A FakeProvince on a loopback port, speaking the shipped `provincial` profile."""
    async with FakeProvince(profile=load_profile("provincial")) as fake:
        yield fake
