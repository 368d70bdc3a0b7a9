"""Checking the X-Twilio-Signature header of Twilio's webhooks (inbound SMS, delivery status)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlparse

from twilio.request_validator import RequestValidator, add_port, remove_port


def verify_twilio_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when `signature` is Twilio's HMAC-SHA1 of the URL and form parameters under the auth token.

    `url` is the full public URL Twilio requested (GATEWAY_PUBLIC_URL + path, with any query string);
    `params` is the posted form. A multi-dict (aiohttp's `await request.post()`) keeps repeated keys,
    which Twilio signs value by value, sorted. The SDK computes the signature; the comparison is done
    here with `hmac.compare_digest` because the SDK's own `validate` compares with a Python loop.
    Like the SDK, the URL is tried with and without its default port: Twilio signs either form.
    JSON webhooks (bodySHA256) are not used by the gateway and never verify here.
    """
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    given = signature.encode("utf-8")
    parsed = urlparse(url)
    valid = False
    # Both forms are always computed so the time taken does not say which one matched.
    for candidate in (remove_port(parsed), add_port(parsed)):
        expected = validator.compute_signature(candidate, params).encode("utf-8")
        valid |= hmac.compare_digest(expected, given)
    return valid
