"""The SMS channel for real: the twilio SDK sends to FakeTwilio; inbound webhooks carry real signatures."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.settings import Settings, load_settings
from gateway.web.keys import INBOX
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, inbound_sms_params, signed_form

PUBLIC = "http://gateway.test"


@pytest.fixture
def settings(database_url: str, fake_twilio, paired_redis_url) -> Settings:  # type: ignore[no-untyped-def]
    return load_settings(
        database_url=database_url, public_url=PUBLIC, redis_url=paired_redis_url, run_dispatcher=False, sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url, reminder_after_seconds=600,
    )


class Phone:
    """A citizen's handset: texts the gateway through signed Twilio webhooks."""

    def __init__(self, client: Any, number: str = "+8613812341234") -> None:
        self.client, self.number = client, number
        self.count = 0

    async def text(
        self, body: str, *, sid: str | None = None, opt_out_type: str | None = None, sign: bool = True, drain: bool = True
    ) -> Any:
        """Post the signed webhook, then (unless drain=False) run the inbox as a worker would."""
        self.count += 1
        params = inbound_sms_params(from_=self.number, body=body, message_sid=sid or f"SM{self.count:032x}", opt_out_type=opt_out_type)
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/sms", params, AUTH_TOKEN if sign else "wrong-token")
        response = await self.client.post("/webhooks/twilio/sms", data=data, headers=headers)
        if drain:
            await self.client.app[INBOX].drain()
        return response


@pytest.fixture
def phone(client) -> Phone:  # type: ignore[no-untyped-def]
    return Phone(client)
