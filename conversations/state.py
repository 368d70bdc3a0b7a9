"""Where conversation state lives between messages: the store interface, keys, and an in-process store.

A state is a small JSON object (see conversations.steps). A Redis store needs nothing more than
`encode_state` / `decode_state` around `SET key value EX ttl`, `GET` and `DEL`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

KEY_PREFIX = "gw:conv"
MAX_STATE_BYTES = 16_384  # a state is a few ids; anything near this is a bug, not a conversation

_CHANNEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SENDER_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")


class StateStore(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None:
        """The state saved under the key, or None when there is none (or it expired)."""

    async def set(self, key: str, state: dict[str, Any], ttl_seconds: int) -> None:
        """Save the state for ttl_seconds (> 0), replacing what was there."""

    async def delete(self, key: str) -> None:
        """Forget the key; deleting a missing key is fine."""

    async def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The states of several keys, in their order (in one exchange with the store where it can)."""

    async def save_many(self, changes: Sequence[tuple[str, dict[str, Any], int]]) -> None:
        """For each (key, state, ttl): save the state for ttl seconds when ttl > 0, else forget the key
        (in one exchange with the store where it can)."""


def sender_key(secret: bytes | str, channel: str, address: str) -> str:
    """A stable, keyed hash of a sender address (phone number, chat id) for use in state keys.

    Keyed, because phone numbers are few enough to hash them all: a plain hash in a Redis dump would
    reveal every number that talks to the gateway (Art. 16(四), 19).
    """
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("sender_key needs a non-empty secret")
    digest = hmac.new(key, f"conversation-sender\x00{channel}\x00{address}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def state_key(channel: str, sender_key: str) -> str:
    """The namespaced key of a conversation: gw:conv:{channel}:{sender_key}."""
    if not _CHANNEL.fullmatch(channel):
        raise ValueError("channel must be a short lowercase name such as 'sms' or 'telegram'")
    if not _SENDER_KEY.fullmatch(sender_key) or sender_key.isdigit():
        # An all-digit key is a phone number or a chat id that someone forgot to hash.
        raise ValueError("sender_key must be a hash of the sender (see sender_key()), never the address")
    return f"{KEY_PREFIX}:{channel}:{sender_key}"


def encode_state(state: dict[str, Any]) -> str:
    """The stored form of a state: compact JSON. Raises ValueError for what a store must not keep."""
    if not isinstance(state, dict):
        raise TypeError("state must be a dict")
    encoded = json.dumps(state, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(encoded.encode()) > MAX_STATE_BYTES:
        raise ValueError("state is too large to store")
    return encoded


def decode_state(raw: str | bytes | None) -> dict[str, Any] | None:
    """Read a stored state back; missing, corrupt or non-object data is None (the flow starts idle)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _check_ttl(ttl_seconds: int) -> None:
    if type(ttl_seconds) is not int or ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be a positive int (use delete() to drop a state)")


class MemoryStateStore:
    """The in-process store used with no GATEWAY_REDIS_URL: one process, TTLs honoured on read.

    `clock` returns seconds on a monotonic scale (time.monotonic by default); tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, str]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, encoded = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return decode_state(encoded)  # a fresh copy: callers cannot change what is stored

    async def set(self, key: str, state: dict[str, Any], ttl_seconds: int) -> None:
        _check_ttl(ttl_seconds)
        encoded = encode_state(state)
        now = self._clock()
        if key not in self._entries and len(self._entries) >= self._max_entries:
            self._purge(now)
        self._entries[key] = (now + ttl_seconds, encoded)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        return [await self.get(key) for key in keys]

    async def save_many(self, changes: Sequence[tuple[str, dict[str, Any], int]]) -> None:
        for key, state, ttl_seconds in changes:
            if ttl_seconds > 0:
                await self.set(key, state, ttl_seconds)
            else:
                await self.delete(key)

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for expires, _ in self._entries.values() if expires > now)

    def _purge(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            # Still full of live conversations: drop the one closest to expiry, the least to lose.
            oldest = min(self._entries, key=lambda k: self._entries[k][0])
            del self._entries[oldest]


__all__ = [
    "KEY_PREFIX",
    "MemoryStateStore",
    "StateStore",
    "decode_state",
    "encode_state",
    "sender_key",
    "state_key",
]
