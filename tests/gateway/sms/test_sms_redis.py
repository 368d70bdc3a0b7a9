"""Conversation state in real Redis: namespaced keys with a TTL, surviving a gateway restart."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sqlmodel import select

from gateway.app import create_app
from gateway.settings import load_settings
from gateway.store.models import Evaluation
from gateway.web.keys import STORE
from tests.conftest import case_payload
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.gateway.sms.conftest import PUBLIC, Phone


@pytest.fixture
def settings(database_url, fake_twilio, redis_url):  # type: ignore[no-untyped-def]
    return load_settings(
        database_url=database_url, public_url=PUBLIC, run_dispatcher=False, sms_provider="twilio", redis_url=redis_url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER, twilio_api_base=fake_twilio.url,
    )


async def test_state_survives_a_restart(aiohttp_client, settings, clock, redis_url):
    from tests.conftest import register_world

    first = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(first.app[STORE], clock)
    for no, item in (("R-1", "个体工商户设立登记"), ("R-2", "食品经营许可")):
        resp = await first.post("/api/v1/cases", json=case_payload(no, item_name=item, item_code=no), headers=world.auth("hanbin-market"))
        assert resp.status == 201
    await Phone(first).text("5")  # two open services: the gateway asks which one, and remembers the 5

    redis = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in redis.scan_iter("gw:conv:sms:*")]
        assert len(keys) == 1 and "13812341234" not in keys[0]
        assert 0 < await redis.ttl(keys[0]) <= 3600
    finally:
        await redis.aclose()
    await first.close()  # the gateway stops ...

    second = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    phone = Phone(second)
    phone.count = 10
    await phone.text("2")  # ... and a new one understands "2" as the choice, not as a rating of 2
    async with second.app[STORE].transaction() as session:
        (evaluation,) = (await session.exec(select(Evaluation))).all()
    assert evaluation.level == 5 and evaluation.channel == "sms"
