"""The real twilio SDK, through TwilioProvider, against FakeTwilio on loopback."""

import asyncio
import base64
import gc
import time
import warnings
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import pytest_asyncio
from multidict import MultiDict

from gateway.messaging.providers import Outgoing, SendFailed
from gateway.settings import load_settings
from gateway.sms.signature import verify_twilio_signature
from gateway.sms.twilio_provider import (
    TwilioHttpClient,
    TwilioProvider,
    classify_api_error,
    classify_delivery_error,
    parse_retry_after,
)
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MESSAGING_SERVICE_SID,
    FakeTwilio,
    inbound_sms_params,
    signed_form,
)

CITIZEN = "+8613812341234"
CALLBACK = "https://gateway.example.cn/webhooks/twilio/status"


def outgoing(body: str = "【政务服务好差评】请为本次服务评价：https://g.example.cn/r/Ab3d", **kw: object) -> Outgoing:
    fields: dict[str, object] = {"message_id": 7, "channel": "sms", "to": CITIZEN, "body": body}
    fields.update(kw)
    return Outgoing(**fields)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def provider(fake_twilio: FakeTwilio) -> AsyncIterator[TwilioProvider]:
    async with TwilioProvider(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
        api_base=fake_twilio.url,
        timeout_seconds=2.0,
    ) as provider:
        yield provider


async def test_sends_the_form_twilio_expects(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    sent = await provider.send(outgoing(status_callback=CALLBACK))

    [received] = fake_twilio.received
    assert received.authorized and received.status == 201
    assert received.form == {
        "To": CITIZEN,
        "From": FROM_NUMBER,
        "Body": "【政务服务好差评】请为本次服务评价：https://g.example.cn/r/Ab3d",
        "StatusCallback": CALLBACK,
    }
    assert sent.provider_message_id == received.sid
    assert sent.provider_message_id.startswith("SM") and len(sent.provider_message_id) == 34
    assert sent.status == "sent"
    assert fake_twilio.messages[received.sid]["status"] == "queued"


async def test_messaging_service_and_no_callback(fake_twilio: FakeTwilio) -> None:
    async with TwilioProvider(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        messaging_service_sid=MESSAGING_SERVICE_SID,
        api_base=fake_twilio.url + "/",
    ) as provider:
        await provider.send(outgoing(body="请回复1-5评价"))

    assert fake_twilio.last_form == {"To": CITIZEN, "MessagingServiceSid": MESSAGING_SERVICE_SID, "Body": "请回复1-5评价"}


async def test_from_settings_points_the_sdk_at_the_configured_base(fake_twilio: FakeTwilio) -> None:
    settings = load_settings(
        sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER,
        twilio_api_base=fake_twilio.url,
    )
    provider = TwilioProvider.from_settings(settings)
    try:
        await provider.send(outgoing())
    finally:
        await provider.close()
    assert len(fake_twilio.sent) == 1


async def test_wrong_credentials_wait_for_the_operator(fake_twilio: FakeTwilio) -> None:
    async with TwilioProvider(
        account_sid=ACCOUNT_SID, auth_token="not-the-token", from_number=FROM_NUMBER, api_base=fake_twilio.url
    ) as provider:
        with pytest.raises(SendFailed) as failed:
            await provider.send(outgoing())

    assert fake_twilio.received[-1].authorized is False
    assert failed.value.code == "20003"
    assert not failed.value.permanent  # a configuration error, not this message's


async def test_basic_auth_header_is_sent(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    await provider.send(outgoing())
    request = provider.http._test_only_last_request
    assert request is not None
    expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == expected
    assert request.url.startswith(fake_twilio.url + f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")


async def test_429_is_retryable_with_retry_after(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=429, retry_after=7)

    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing())

    assert not failed.value.permanent and not failed.value.opt_out
    assert failed.value.retry_after_seconds == 7
    assert failed.value.code == "20429"
    # The next attempt goes through.
    assert (await provider.send(outgoing())).provider_message_id


async def test_500_is_retryable(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=500)

    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing())

    assert not failed.value.permanent
    assert failed.value.retry_after_seconds is None


async def test_a_proxy_error_page_is_retryable(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=502, body="<html><body>502 Bad Gateway</body></html>")

    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing())

    assert not failed.value.permanent and failed.value.code == "502"


async def test_unsubscribed_is_permanent_and_an_opt_out(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=400, code=21610)

    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing())

    assert failed.value.permanent and failed.value.opt_out
    assert failed.value.code == "21610"
    assert failed.value.retry_after_seconds is None


async def test_invalid_number_is_permanent_and_masked(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing(to="013812341234"))  # not E.164: the fake's validation answers 21211

    assert failed.value.permanent and not failed.value.opt_out
    assert failed.value.code == "21211"
    assert "013812341234" not in failed.value.detail


async def test_injected_21211_is_permanent(provider: TwilioProvider, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=400, code=21211, message=f"The 'To' number {CITIZEN} is not a valid phone number.")

    with pytest.raises(SendFailed) as failed:
        await provider.send(outgoing())

    assert failed.value.permanent and not failed.value.opt_out
    assert CITIZEN not in failed.value.detail and "138****1234" in failed.value.detail


async def test_timeout_is_retryable_and_bounded(fake_twilio: FakeTwilio) -> None:
    fake_twilio.delay_seconds = 5.0
    async with TwilioProvider(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
        api_base=fake_twilio.url,
        timeout_seconds=0.3,
    ) as provider:
        started = time.monotonic()
        with pytest.raises(SendFailed) as failed:
            await provider.send(outgoing())
        elapsed = time.monotonic() - started

    assert not failed.value.permanent and failed.value.code == "timeout"
    assert elapsed < 2.0


async def test_connection_refused_is_retryable() -> None:
    async with FakeTwilio() as fake:
        url = fake.url  # closed at the end of the block: nothing listens there any more
    async with TwilioProvider(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER, api_base=url
    ) as provider:
        with pytest.raises(SendFailed) as failed:
            await provider.send(outgoing())

    assert not failed.value.permanent and failed.value.code == "network"


async def test_concurrent_sends_keep_their_own_retry_after(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(1, status=429, retry_after=3)
    async with TwilioProvider(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER, api_base=fake_twilio.url
    ) as provider:
        results = await asyncio.gather(*(provider.send(outgoing()) for _ in range(5)), return_exceptions=True)

    failures = [r for r in results if isinstance(r, SendFailed)]
    assert len(failures) == 1 and failures[0].retry_after_seconds == 3
    assert len(fake_twilio.sent) == 4


async def test_close_releases_the_sdk_session(fake_twilio: FakeTwilio) -> None:
    provider = TwilioProvider(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER, api_base=fake_twilio.url
    )
    await provider.send(outgoing())
    assert not provider.closed

    await provider.close()

    assert provider.closed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del provider
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_provider_requires_a_sender() -> None:
    with pytest.raises(ValueError, match="From number or a Messaging Service"):
        TwilioProvider(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)


async def test_only_the_twilio_api_origin_is_rebased() -> None:
    async with TwilioHttpClient(api_base="http://127.0.0.1:9") as client:
        assert client.rebase("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json") == (
            "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json"
        )
        for other in (
            "https://messaging.twilio.com/v1/Services",
            "https://api.twilio.com.evil.example/2010-04-01",
            "http://api.twilio.com/2010-04-01",
            "https://api.twilio.com:8443/2010-04-01",
        ):
            assert client.rebase(other) == other


def test_error_table() -> None:
    assert classify_api_error(400, 21610).opt_out
    for code in (21211, 21614, 21612, 21217):
        kind = classify_api_error(400, code)
        assert kind.permanent and not kind.opt_out, code
    for code in (21408, 20003, 21611):
        assert not classify_api_error(400, code).permanent, code
    assert classify_api_error(400, 21999).permanent  # other 4xx
    assert not classify_api_error(429, None).permanent
    assert not classify_api_error(503, None).permanent
    assert not classify_delivery_error("30003").permanent
    assert classify_delivery_error(30005).permanent
    assert not classify_delivery_error(None).permanent


def test_retry_after_forms() -> None:
    now = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- webhook signatures --------------------------------------------------------------------------

WEBHOOK_URL = "https://gateway.example.cn/webhooks/twilio/sms"


def test_signature_of_a_signed_form_verifies() -> None:
    params = inbound_sms_params(from_=CITIZEN, body="5 服务很好")
    headers, _ = signed_form(WEBHOOK_URL, params, AUTH_TOKEN)

    assert verify_twilio_signature(AUTH_TOKEN, WEBHOOK_URL, params, headers["X-Twilio-Signature"])
    # Twilio may have signed the URL with the default port spelled out.
    assert verify_twilio_signature(
        AUTH_TOKEN, "https://gateway.example.cn:443/webhooks/twilio/sms", params, headers["X-Twilio-Signature"]
    )


@pytest.mark.parametrize(
    "change",
    ["body", "url", "token", "missing", "garbage"],
)
def test_signature_rejects_anything_else(change: str) -> None:
    params = inbound_sms_params(from_=CITIZEN, body="5")
    headers, _ = signed_form(WEBHOOK_URL, params, AUTH_TOKEN)
    signature: str | None = headers["X-Twilio-Signature"]
    url, token = WEBHOOK_URL, AUTH_TOKEN
    if change == "body":
        params = {**params, "Body": "1"}
    elif change == "url":
        url = WEBHOOK_URL + "?x=1"
    elif change == "token":
        token = "another-token"
    elif change == "missing":
        signature = None
    else:
        signature = "不是签名"
    assert not verify_twilio_signature(token, url, params, signature)


def test_signature_covers_repeated_keys() -> None:
    pairs = [("Body", "b"), ("MediaUrl", "https://x/2"), ("MediaUrl", "https://x/1")]
    headers, _ = signed_form(WEBHOOK_URL, pairs, AUTH_TOKEN)
    assert verify_twilio_signature(AUTH_TOKEN, WEBHOOK_URL, MultiDict(pairs), headers["X-Twilio-Signature"])
    assert not verify_twilio_signature(AUTH_TOKEN, WEBHOOK_URL, MultiDict(pairs[:2]), headers["X-Twilio-Signature"])
