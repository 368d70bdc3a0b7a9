"""The bot while Redis is down: the update is refused with 503 (Telegram delivers it again), one log line,
no traceback; delivered again once Redis is back, it acts once."""

from __future__ import annotations

import logging

from sqlmodel import select

from gateway.app import create_app
from gateway.store.models import Evaluation
from gateway.web.keys import RUNNER, STORE
from tests.conftest import register_world
from tests.fakes.redis_server import private_redis  # noqa: F401  (the fixture)
from tests.fakes.telegram_api import text_message_update
from tests.gateway.bot.conftest import Chat, bot_settings
from tests.gateway.evaluations.helpers import report


async def test_an_update_during_an_outage_is_taken_again_later(
    aiohttp_client, database_url, fake_telegram, private_redis, clock, caplog  # noqa: F811
):  # type: ignore[no-untyped-def]
    settings = bot_settings(database_url, fake_telegram, redis_url=private_redis.url)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    world = await register_world(client.app[STORE], clock)
    await report(client, world, citizen={"telegram_chat_id": fake_telegram_user()})
    chat = Chat(client, fake_telegram)
    update = text_message_update("4")
    private_redis.stop()
    caplog.set_level(logging.INFO)
    assert (await chat.post(update)).status == 503
    assert (await chat.post(update)).status == 503  # still down: answered at once, without a probe
    assert not [r for r in caplog.records if r.exc_info]
    assert sum("Redis is unreachable" in r.getMessage() for r in caplog.records) == 1
    await private_redis.start()
    client.app[RUNNER].redis_watch._next_probe = 0.0  # the next probe is due now rather than after the backoff
    assert (await chat.post(update)).status == 200
    assert (await chat.post(update)).status == 200  # a second delivery of the same update acts once
    async with client.app[STORE].transaction() as session:
        (evaluation,) = (await session.exec(select(Evaluation))).all()
    assert evaluation.level == 4 and evaluation.channel == "bot"


def fake_telegram_user() -> int:
    from tests.fakes.telegram_api import USER_ID

    return USER_ID
