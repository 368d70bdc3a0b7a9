"""A loopback stand-in for Twilio's Messages API, and builders for Twilio's webhook requests.

FakeTwilio answers `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` the way Twilio does:
HTTP Basic auth with the account SID and auth token, a form-encoded body, a 201 with the Message
resource as JSON, and Twilio's error JSON (`code`, `message`, `more_info`, `status`) otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from . import LoopbackServer

API_VERSION = "2010-04-01"
ACCOUNT_SID = "AC" + "0a1b2c3d4e5f6789" * 2
AUTH_TOKEN = "f00dfeed" * 4
FROM_NUMBER = "+15005550006"  # Twilio's magic test number: "valid and SMS-capable"
MESSAGING_SERVICE_SID = "MG" + "9e8d7c6b5a4f3210" * 2

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Twilio's wording for the errors a test is likely to inject.
ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service is unavailable. Please try again",
    21211: "Invalid 'To' Phone Number",
    21217: "Phone number does not appear to be valid",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number is not currently reachable using the 'From' phone number via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}
_DEFAULT_CODES = {400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


@dataclass(frozen=True)
class Received:
    """One request that reached the Messages endpoint, whatever the fake answered."""

    form: dict[str, str]
    at: datetime
    authorized: bool
    status: int  # the HTTP status the fake answered
    sid: str | None = None  # the Message SID, when one was created


@dataclass
class _Failure:
    remaining: int
    status: int
    code: int | None
    message: str | None
    retry_after: str | None
    body: str | None


class FakeTwilio(LoopbackServer):
    """Twilio's REST Messages endpoint on loopback, recording every form it receives.

    `fail_next(n, status, code=…)` makes the next n create calls fail; `delay_seconds` holds every
    answer back that long (a hung provider, for timeouts); `hold_answers()` creates messages but holds
    the answers to the create calls back until `release_answers()` (a slow answer on the way back,
    while the message is already on its way and its status callbacks may come first).
    """

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, *, delay_seconds: float = 0.0):
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.delay_seconds = delay_seconds
        self.received: list[Received] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self._failures: list[_Failure] = []
        self._answers_held: asyncio.Event | None = None

    def hold_answers(self) -> None:
        self._answers_held = asyncio.Event()

    def release_answers(self) -> None:
        if self._answers_held is not None:
            self._answers_held.set()
            self._answers_held = None

    # -- test controls ----------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | str | None = None,
        body: str | None = None,
    ) -> None:
        """Make the next n create calls fail with this HTTP status and Twilio error code.

        The code defaults by status (429 → 20429, 500 → 20500, 400 → 21211 …); `retry_after` adds a
        Retry-After header; `body` replaces the JSON with raw text (a proxy's HTML error page).
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        self._failures.append(
            _Failure(
                remaining=n,
                status=status,
                code=code if code is not None else _DEFAULT_CODES.get(status),
                message=message,
                retry_after=None if retry_after is None else str(retry_after),
                body=body,
            )
        )

    @property
    def sent(self) -> list[Received]:
        """The requests that created a message."""
        return [r for r in self.received if r.sid is not None]

    @property
    def last_form(self) -> dict[str, str]:
        if not self.received:
            raise AssertionError("FakeTwilio received nothing")
        return self.received[-1].form

    # -- the server -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        base = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.router.add_post(base + ".json", self._create)
        app.router.add_get(base + "/{message_sid}.json", self._fetch)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        response = await self._answer_create(request)
        held = self._answers_held
        if held is not None:  # the answer, whatever it is, waits; what was recorded stays recorded
            await self.until(held)
        return response

    async def _answer_create(self, request: web.Request) -> web.Response:
        form = dict((await request.post()).items())
        form = {k: v for k, v in form.items() if isinstance(v, str)}
        at = datetime.now(timezone.utc)
        await self.pause(self.delay_seconds)
        authorized = self._authorized(request)
        if not authorized:
            return self._record(form, at, authorized, self._auth_error())
        if request.match_info["account_sid"] != self.account_sid:
            return self._record(form, at, authorized, error_response(404, 20404))
        failure = self._take_failure()
        if failure is not None:
            return self._record(form, at, authorized, _failure_response(failure))
        invalid = self._validate(form)
        if invalid is not None:
            return self._record(form, at, authorized, invalid)
        resource = self._message_resource(form, at)
        self.messages[resource["sid"]] = resource
        response = web.json_response(resource, status=201, headers=_request_id())
        self.received.append(Received(form=form, at=at, authorized=True, status=201, sid=resource["sid"]))
        return response

    async def _fetch(self, request: web.Request) -> web.Response:
        await self.pause(self.delay_seconds)
        if not self._authorized(request):
            return self._auth_error()
        resource = self.messages.get(request.match_info["message_sid"])
        if resource is None or request.match_info["account_sid"] != self.account_sid:
            return error_response(404, 20404)
        return web.json_response(resource, headers=_request_id())

    def _record(self, form: dict[str, str], at: datetime, authorized: bool, response: web.Response) -> web.Response:
        self.received.append(Received(form=form, at=at, authorized=authorized, status=response.status))
        return response

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(login, self.account_sid) and secrets.compare_digest(password, self.auth_token)

    def _auth_error(self) -> web.Response:
        response = error_response(401, 20003)
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response

    def _take_failure(self) -> _Failure | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failures.pop(0)
        return failure

    def _validate(self, form: Mapping[str, str]) -> web.Response | None:
        to = form.get("To", "")
        if not to:
            return error_response(400, 21604)
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return error_response(400, 21603)
        if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
            return error_response(400, 21602)
        if not _E164.match(to):
            return error_response(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if len(form.get("Body", "")) > 1600:
            return error_response(400, 21617)
        return None

    def _message_resource(self, form: Mapping[str, str], at: datetime) -> dict[str, Any]:
        sid = new_message_sid()
        body = form.get("Body", "")
        stamp = format_datetime(at)  # RFC 2822, as Twilio writes its dates
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": stamp,
            "date_sent": None,
            "date_updated": stamp,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # A Messaging Service without a From picks the sender later: Twilio says "accepted".
            "status": "queued" if form.get("From") else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }


def error_response(status: int, code: int | None, message: str | None = None) -> web.Response:
    """Twilio's error JSON for an HTTP status and error code."""
    payload: dict[str, Any] = {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code or 0, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }
    return web.json_response(payload, status=status, headers=_request_id())


def _failure_response(failure: _Failure) -> web.Response:
    if failure.body is not None:
        response = web.Response(status=failure.status, text=failure.body, content_type="text/html")
    else:
        response = error_response(failure.status, failure.code, failure.message)
    if failure.retry_after is not None:
        response.headers["Retry-After"] = failure.retry_after
    return response


def _request_id() -> dict[str, str]:
    return {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex}


def _segments(body: str) -> int:
    # Deliberately independent of gateway.messaging.segments: ASCII counts as GSM-7, anything else UCS-2.
    if body.isascii():
        return 1 if len(body) <= 160 else -(-len(body) // 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


# -- webhook requests, as Twilio sends them to the gateway ------------------------------------------


def new_message_sid() -> str:
    """A fresh Message SID: "SM" and 32 hex digits."""
    return "SM" + uuid.uuid4().hex


def inbound_sms_params(
    *,
    from_: str,
    body: str,
    to: str = FROM_NUMBER,
    account_sid: str = ACCOUNT_SID,
    message_sid: str | None = None,
    messaging_service_sid: str | None = None,
    opt_out_type: str | None = None,
) -> dict[str, str]:
    """The form of an inbound SMS webhook (`POST` to the number's messaging URL).

    `opt_out_type` ("STOP", "START", "HELP") is what Twilio adds when Advanced Opt-Out recognised
    a keyword in the body.
    """
    sid = message_sid or new_message_sid()
    params = {
        "ToCountry": _country(to),
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "FromCountry": _country(from_),
        "To": to,
        "NumSegments": str(_segments(body)),
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    if opt_out_type:
        params["OptOutType"] = opt_out_type
    return params


def status_callback_params(
    *,
    message_sid: str,
    status: str,
    to: str,
    from_: str = FROM_NUMBER,
    account_sid: str = ACCOUNT_SID,
    error_code: int | str | None = None,
    messaging_service_sid: str | None = None,
) -> dict[str, str]:
    """The form of a delivery-status callback (MessageStatus queued/sent/delivered/undelivered/failed)."""
    params = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": message_sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    return params


def signed_form(
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    auth_token: str = AUTH_TOKEN,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a form POST to `url` signed the way Twilio signs webhooks.

    `url` is the full URL Twilio would call (the gateway's public URL + path); pairs may repeat a key.
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    signature = RequestValidator(auth_token).compute_signature(url, MultiDict(pairs))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Twilio-Signature": signature,
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "User-Agent": "TwilioProxy/1.1",
    }
    return headers, urlencode(pairs).encode("utf-8")


def _country(number: str) -> str:
    return "CN" if number.startswith("+86") else "US"


__all__ = [
    "ACCOUNT_SID",
    "API_VERSION",
    "AUTH_TOKEN",
    "FROM_NUMBER",
    "MESSAGING_SERVICE_SID",
    "FakeTwilio",
    "Received",
    "error_response",
    "inbound_sms_params",
    "new_message_sid",
    "signed_form",
    "status_callback_params",
]
