"""What the rating page keeps of a rating for fraud detection: keyed hashes of the client address and of
a device cookie, and when the page was shown. Never the address itself (Art. 16(四), 19).

The time the page was shown travels in the form as a signed value, so showing the page writes nothing
(DESIGN §2: a GET records nothing; SMS apps prefetch links).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.fraud.models import RatingSignal

DEVICE_COOKIE = "gw_device"
DEVICE_COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie
_DEVICE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"haochaping-gateway", info=info).derive(
        secret.encode("utf-8")
    )


class PageSignals:
    """Keys derived from GATEWAY_SECRET_KEY, one per purpose: a hash of one kind says nothing of another."""

    def __init__(self, secret_key: str) -> None:
        self._address_key = _derive(secret_key, b"gateway/fraud-client-address")
        self._device_key = _derive(secret_key, b"gateway/fraud-device")
        self._opened_key = _derive(secret_key, b"gateway/fraud-page-opened")

    def address_hash(self, address: str | None) -> str | None:
        if not address:
            return None
        return hmac.new(self._address_key, address.strip().encode(), hashlib.sha256).hexdigest()

    def device_hash(self, device_id: str | None) -> str | None:
        if not device_id:
            return None
        return hmac.new(self._device_key, device_id.encode(), hashlib.sha256).hexdigest()

    def opened_value(self, token: str, at: datetime) -> str:
        """The signed time the page for this rating link was shown: `<unix ms>.<signature>`."""
        stamp = str(int(at.timestamp() * 1000))
        return f"{stamp}.{self._sign(token, stamp)}"

    def opened_at(self, token: str, value: str | None) -> datetime | None:
        """The time a form says its page was shown, if the signature holds for this link; else None."""
        if not value or len(value) > 64 or "." not in value:
            return None
        stamp, signature = value.split(".", 1)
        if not stamp.isdigit() or not hmac.compare_digest(signature, self._sign(token, stamp)):
            return None
        return datetime.fromtimestamp(int(stamp) / 1000, tz=timezone.utc)

    def _sign(self, token: str, stamp: str) -> str:
        return hmac.new(self._opened_key, f"{token}|{stamp}".encode(), hashlib.sha256).hexdigest()[:32]


def new_device_id() -> str:
    return secrets.token_urlsafe(16)


def valid_device_id(value: str | None) -> str | None:
    """A device cookie as we set it, or None (a forged or mangled cookie is treated as none)."""
    if value and 16 <= len(value) <= 64 and set(value) <= _DEVICE_ID_CHARS:
        return value
    return None


async def record_signal(
    session: AsyncSession,
    *,
    evaluation_id: int,
    signals: PageSignals,
    address: str | None,
    device_id: str | None,
    opened_at: datetime | None,
    at: datetime,
) -> RatingSignal:
    """Store the page's signals for a rating, in the rating's own transaction."""
    row = RatingSignal(
        evaluation_id=evaluation_id,
        address_hash=signals.address_hash(address),
        device_hash=signals.device_hash(device_id),
        opened_at=opened_at if opened_at is not None and opened_at <= at else None,
        created_at=at,
    )
    session.add(row)
    await session.flush()
    return row


@lru_cache(maxsize=4)
def signals_for(secret_key: str) -> PageSignals:
    """One PageSignals per secret (deriving the keys is the costly part)."""
    return PageSignals(secret_key)
