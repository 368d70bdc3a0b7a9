"""Sending SMS through Twilio's Messages API with the official SDK's asynchronous client."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from gateway.messaging.providers import Outgoing, SendFailed, Sent
from gateway.privacy import mask_phone

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.twilio.com"
DEFAULT_TIMEOUT_SECONDS = 10.0
_DEFAULT_SCHEME, _DEFAULT_HOST = "https", "api.twilio.com"

# Headers of the last Twilio response seen by the current task. The SDK turns an error response
# into an exception without its headers; Retry-After is read from here. A context variable, not an
# attribute, because several tasks share one client and each must see its own response.
_last_response_headers: ContextVar[Mapping[str, str] | None] = ContextVar("twilio_last_response_headers", default=None)


@dataclass(frozen=True)
class ErrorClass:
    """What a Twilio error means for the message: give up on it for good, and whether it is an opt-out."""

    permanent: bool
    opt_out: bool = False
    reason: str = ""


# Error codes Twilio answers when a message is created (POST Messages.json).
# Rule: an error about this recipient is permanent (retrying the same number cannot help); an error
# about our account or configuration is retryable, so messages wait (bounded by the dispatcher's
# attempts) while the operator fixes the setting instead of every queued invitation failing at once.
API_ERRORS: dict[int, ErrorClass] = {
    # The recipient replied STOP to our sender: Twilio's opt-out signal; record it, never send again.
    21610: ErrorClass(permanent=True, opt_out=True, reason="recipient unsubscribed from this sender"),
    21211: ErrorClass(permanent=True, reason="invalid 'To' phone number"),
    21614: ErrorClass(permanent=True, reason="'To' is not a mobile number"),
    21612: ErrorClass(permanent=True, reason="'To' cannot be reached by SMS from this sender"),
    21217: ErrorClass(permanent=True, reason="'To' does not appear to be a valid phone number"),
    # Geographic permission for the destination's region is an account setting the operator can turn
    # on: retryable, unlike the per-number errors above.
    21408: ErrorClass(permanent=False, reason="SMS to this region is not enabled on the Twilio account"),
    20003: ErrorClass(permanent=False, reason="Twilio rejected the account SID or auth token"),
    21606: ErrorClass(permanent=False, reason="'From' is not an SMS-capable number of this account"),
    # Transient by nature.
    21611: ErrorClass(permanent=False, reason="the sender's queue at Twilio is full"),
    20429: ErrorClass(permanent=False, reason="rate limited by Twilio"),
}

# ErrorCode values of delivery-status callbacks (MessageStatus failed/undelivered). They never come
# back from the create call; 30003 in particular is asynchronous: the handset was off or out of
# coverage, the number itself is fine, so it is not permanent.
DELIVERY_ERRORS: dict[int, ErrorClass] = {
    30003: ErrorClass(permanent=False, reason="handset unreachable (off or out of coverage)"),
    30004: ErrorClass(permanent=True, reason="message blocked for this destination"),
    30005: ErrorClass(permanent=True, reason="unknown destination handset"),
    30006: ErrorClass(permanent=True, reason="landline or unreachable carrier"),
    30007: ErrorClass(permanent=True, reason="filtered by the carrier"),
    30008: ErrorClass(permanent=False, reason="unknown delivery error"),
}


def classify_api_error(status: int, code: int | None) -> ErrorClass:
    """Classify an error answer of the Messages API by Twilio code, then by HTTP status."""
    if code is not None and code in API_ERRORS:
        return API_ERRORS[code]
    if status in (408, 429) or status >= 500:
        return ErrorClass(permanent=False, reason=f"Twilio answered HTTP {status}")
    if 400 <= status < 500:
        return ErrorClass(permanent=True, reason=f"Twilio refused the message (HTTP {status})")
    return ErrorClass(permanent=False, reason=f"unexpected HTTP {status} from Twilio")


def classify_delivery_error(code: int | str | None) -> ErrorClass:
    """Classify the ErrorCode of a delivery-status callback; unknown codes are not permanent."""
    try:
        number = int(code) if code not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        return ErrorClass(permanent=False, reason="delivery failed without an error code")
    return DELIVERY_ERRORS.get(number, ErrorClass(permanent=False, reason=f"delivery error {number}"))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class TwilioHttpClient(AsyncTwilioHttpClient):
    """Twilio's aiohttp client with the changes the gateway needs.

    - Requests for https://api.twilio.com go to `api_base` instead (TWILIO_API_BASE; a loopback fake
      in tests). Only that exact origin is rewritten; the SDK builds every Messages URL from it.
    - Basic auth is sent as an Authorization header: aiohttp 3.14 deprecates the `auth=` argument
      the SDK passes (a DeprecationWarning, an error under `filterwarnings = error`).
    - A request without its own timeout gets `timeout_seconds`: the SDK passes None, which aiohttp
      reads as "no timeout at all", and its constructor's timeout is never applied by this client.
    - Requests and responses are logged at DEBUG, not INFO.

    It opens its aiohttp session when constructed, so construct it inside the running loop (in the
    app's cleanup context) and `await close()` it there.
    """

    def __init__(self, *, api_base: str = DEFAULT_API_BASE, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        super().__init__(pool_connections=True, timeout=timeout_seconds)
        self.api_base = api_base.rstrip("/")

    def rebase(self, url: str) -> str:
        """Move a URL on https://api.twilio.com to the configured base; leave any other URL alone."""
        parts = urlsplit(url)
        if parts.scheme != _DEFAULT_SCHEME or parts.netloc != _DEFAULT_HOST:
            return url
        rest = url[len(f"{_DEFAULT_SCHEME}://{_DEFAULT_HOST}") :]
        return self.api_base + rest

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = _basic_auth(*auth)
        _last_response_headers.set(None)
        response = await super().request(
            method,
            self.rebase(url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )
        _last_response_headers.set(response.headers)
        return response

    # The SDK logs every request and response at INFO, headers included; one DEBUG line each is enough.
    def log_request(self, kwargs: dict[str, Any]) -> None:
        log.debug("twilio request %s %s", kwargs["method"], kwargs["url"])

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("twilio response %s", status_code)

    @property
    def closed(self) -> bool:
        return self.session is None or self.session.closed


class TwilioProvider:
    """The SMS provider backed by Twilio (GATEWAY_SMS_PROVIDER=twilio).

    One instance per process, opened and closed in the app's cleanup context. When both a Messaging
    Service and a From number are configured both are sent: Twilio then sends from that number with
    the service's features (opt-out handling, status callback defaults).
    """

    channel = "sms"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str = "",
        messaging_service_sid: str = "",
        api_base: str = DEFAULT_API_BASE,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("Twilio needs an account SID and an auth token")
        if not (from_number or messaging_service_sid):
            raise ValueError("Twilio needs a From number or a Messaging Service SID")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.http = TwilioHttpClient(api_base=api_base, timeout_seconds=timeout_seconds)
        # An environment mapping of our own: the SDK would otherwise read TWILIO_EDGE/TWILIO_REGION
        # from os.environ and move the host away from the configured base.
        self.client = Client(
            account_sid,
            auth_token,
            http_client=self.http,
            environment={"TWILIO_ACCOUNT_SID": account_sid},
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> TwilioProvider:
        """Build the provider from TWILIO_* settings."""
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            api_base=settings.twilio_api_base,
            timeout_seconds=timeout_seconds,
        )

    async def send(self, message: Outgoing) -> Sent:
        """Create the message at Twilio; raise SendFailed saying whether a retry can help."""
        kwargs: dict[str, Any] = {"to": message.to, "body": message.body}
        if self.from_number:
            kwargs["from_"] = self.from_number
        if self.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        if message.status_callback:
            kwargs["status_callback"] = message.status_callback
        try:
            created = await self.client.messages.create_async(**kwargs)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._refused(message, exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # A timeout may hide a message Twilio did create; the outbox accepts at-least-once.
            code = "timeout" if isinstance(exc, asyncio.TimeoutError) else "network"
            log.warning("twilio unreachable", extra={"message_id": message.message_id, "error": type(exc).__name__})
            raise SendFailed(f"Twilio unreachable: {type(exc).__name__}", code=code) from exc
        # "sent" for the outbox: Twilio accepted it. Twilio's own queued/accepted would read as
        # "not yet sent" to the dispatcher; delivery arrives later through the status callback.
        return Sent(provider_message_id=created.sid, status="sent")

    async def close(self) -> None:
        """Close the aiohttp session the SDK's client opened."""
        await self.http.close()

    @property
    def closed(self) -> bool:
        return self.http.closed

    async def __aenter__(self) -> TwilioProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _refused(self, message: Outgoing, exc: TwilioRestException | TwilioServiceException) -> SendFailed:
        status = int(exc.status)
        code = _int_or_none(exc.code)
        kind = classify_api_error(status, code)
        headers = _last_response_headers.get()
        retry_after = None
        if not kind.permanent and headers is not None:
            retry_after = parse_retry_after(headers.get("Retry-After"))
        twilio_text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        detail = f"Twilio {status}"
        if code is not None:
            detail += f" error {code}"
        detail += f": {kind.reason}"
        if twilio_text:
            detail += f" ({_mask_numbers(str(twilio_text))})"
        log_at = logging.ERROR if code in (20003, 21408, 21606) else logging.WARNING
        log.log(
            log_at,
            "twilio refused a message",
            extra={
                "message_id": message.message_id,
                "to": mask_phone(message.to),
                "http_status": status,
                "error_code": code,
                "permanent": kind.permanent,
            },
        )
        return SendFailed(
            detail,
            code=str(code) if code is not None else f"http-{status}",
            permanent=kind.permanent,
            opt_out=kind.opt_out,
            retry_after_seconds=retry_after,
        )


def _basic_auth(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


_PHONE_LIKE = re.compile(r"\+?\d{7,15}")


def _mask_numbers(text: str) -> str:
    # Twilio's messages quote the 'To' number ("The 'To' number +86138… is not valid"); error details
    # are stored and logged, so mask them like every other number (Art. 16(四)).
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)
