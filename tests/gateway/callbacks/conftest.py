"""Callback campaigns for real: SMS through the twilio SDK to FakeTwilio, the bot through aiogram to
FakeTelegram; tickets made the real way (a case reported, rated badly, transferred, resolved)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlmodel import select

from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from gateway.settings import Settings
from gateway.store.models import Campaign, CampaignTarget, OutboundMessage
from gateway.web.keys import DISPATCHER, STORE
from tests.conftest import World, case_payload
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.gateway.bot.conftest import Chat, Unpaced, bot_settings
from tests.gateway.sms.conftest import Phone
from tests.gateway.tickets.helpers import Api

_numbers = itertools.count(1)


def campaign_settings(database_url: str, fake_twilio: Any, fake_telegram: Any, **overrides: Any) -> Settings:
    """Both channels on: SMS by Twilio (fake), the bot (fake Telegram)."""
    values: dict[str, Any] = dict(
        sms_provider="twilio", twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER, twilio_api_base=fake_twilio.url,
    )
    values.update(overrides)
    return bot_settings(database_url, fake_telegram, **values)


@pytest.fixture
def settings(database_url: str, fake_twilio, fake_telegram) -> Settings:  # type: ignore[no-untyped-def]
    return campaign_settings(database_url, fake_twilio, fake_telegram)


@pytest.fixture
async def client(app, aiohttp_client):  # type: ignore[no-untyped-def]
    client = await aiohttp_client(app)
    client.app[DISPATCHER].limiter = Unpaced()
    client.app[CAMPAIGN_FEEDER].sweep_seconds = 0  # every pass sweeps (no-answers, delivery receipts)
    return client


@pytest.fixture
def api(client, world: World) -> Api:  # type: ignore[no-untyped-def]
    return Api(client, world)


def phone_number(n: int) -> str:
    return f"1381234{n:04d}"


MakeTicket = Callable[..., Awaitable[int]]


@pytest.fixture
def make_open_ticket(client, world: World, clock) -> MakeTicket:  # type: ignore[no-untyped-def]
    """A bad-review ticket for a citizen (by phone and/or Telegram chat), just opened (`dispatching`)."""

    async def make(
        *, phone: str | None = None, chat_id: int | None = None, org: str = "hanbin-market", region: str = "610902",
        item_name: str = "个体工商户设立登记", level: int = 2,
    ) -> int:
        citizen: dict[str, Any] = {}
        if phone:
            citizen["phone"] = phone
        if chat_id:
            citizen["telegram_chat_id"] = chat_id
        payload = case_payload(
            f"CB-{next(_numbers):05d}", org_code=org, region_code=region, item_name=item_name, citizen=citizen,
            completed_at=clock.now().isoformat(),
        )
        resp = await client.post("/api/v1/cases", json=payload, headers=world.auth(org))
        body = await resp.json()
        assert resp.status == 201, body
        resp = await client.post(f"/r/{body['invitation']['token']}", json={"level": level, "reasons": [213 if level == 2 else 115]})
        rated = await resp.json()
        assert resp.status == 201, rated
        return int(rated["ticket_id"])

    return make


@pytest.fixture
def make_resolved(make_open_ticket: MakeTicket, api: Api) -> MakeTicket:
    """A bad-review ticket taken through to `resolved`: transferred, accepted, rectified, replied to."""

    async def make(*, approval: str = "hanbin", org: str = "hanbin-market", **kwargs: Any) -> int:
        ticket_id = await make_open_ticket(org=org, **kwargs)
        await api.resolved(ticket_id, approval=approval, unit=org)
        return ticket_id

    return make


async def flush(client: Any) -> None:
    """Let the dispatcher send everything that is due."""
    while await client.app[DISPATCHER].run_once():
        pass


async def run_campaigns(client: Any, passes: int = 20) -> None:
    """Feeder and dispatcher passes until the campaign work settles (or `passes` runs out)."""
    feeder = client.app[CAMPAIGN_FEEDER]
    for _ in range(passes):
        report = await feeder.run_once()
        sent = 0
        while handled := await client.app[DISPATCHER].run_once():
            sent += handled
        if not (report.queued or report.skipped or report.started or sent):
            await feeder.run_once()  # one more: mirrors the last sends, finishes what is done
            return


async def rows(client: Any, model: Any, *where: Any) -> list[Any]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(model).where(*where).order_by(model.id))).all())


async def targets(client: Any, campaign_id: int) -> dict[int, CampaignTarget]:
    return {t.ticket_id: t for t in await rows(client, CampaignTarget, CampaignTarget.campaign_id == campaign_id)}


async def surveys(client: Any) -> list[OutboundMessage]:
    return await rows(client, OutboundMessage, OutboundMessage.purpose == "survey")


async def campaign_row(client: Any, campaign_id: int) -> Campaign:
    (campaign,) = await rows(client, Campaign, Campaign.id == campaign_id)
    return campaign


class Campaigns:
    """The campaign API seen from a test."""

    def __init__(self, client: Any, world: World) -> None:
        self.client, self.world = client, world

    async def start(self, org: str = "hanbin", **body: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post("/api/v1/campaigns", json=body, headers=self.world.auth(org))
        return resp.status, await resp.json()

    async def started(self, org: str = "hanbin", **body: Any) -> dict[str, Any]:
        status, answer = await self.start(org, **body)
        assert status == 201, answer
        return answer

    async def get(self, campaign_id: int, org: str = "hanbin") -> tuple[int, dict[str, Any]]:
        resp = await self.client.get(f"/api/v1/campaigns/{campaign_id}", headers=self.world.auth(org))
        return resp.status, await resp.json()

    async def read(self, campaign_id: int, org: str = "hanbin") -> dict[str, Any]:
        status, body = await self.get(campaign_id, org)
        assert status == 200, body
        return body

    async def act(self, campaign_id: int, action: str, org: str = "hanbin") -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(f"/api/v1/campaigns/{campaign_id}/{action}", headers=self.world.auth(org))
        return resp.status, await resp.json()

    async def answer(self, campaign_id: int, org: str = "hanbin", **body: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(f"/api/v1/campaigns/{campaign_id}/answers", json=body, headers=self.world.auth(org))
        return resp.status, await resp.json()


@pytest.fixture
def campaigns(client, world: World) -> Campaigns:  # type: ignore[no-untyped-def]
    return Campaigns(client, world)


@pytest.fixture
def chat(client, fake_telegram) -> Chat:  # type: ignore[no-untyped-def]
    return Chat(client, fake_telegram)


_message_sids = itertools.count(1)


class Handset(Phone):
    """A citizen's handset; message ids are unique across handsets (Twilio's are global)."""

    async def text(self, body: str, **kwargs: Any) -> Any:
        kwargs.setdefault("sid", f"SM{next(_message_sids):032x}")
        return await super().text(body, **kwargs)


def phone_of(client: Any, number: str) -> Phone:
    """A handset texting the gateway (number in national form, as reported with the case)."""
    return Handset(client, f"+86{number}")
