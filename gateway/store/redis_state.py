"""Conversation state in Redis: one JSON value per (channel, sender) key, with a TTL.

Keys (all under the gw: namespace):
  gw:conv:{channel}:{sender_key}  conversation state, JSON, expires after GATEWAY_CONVERSATION_TTL_SECONDS
  gw:rate:{sender}:{second}       send-rate window counters (messaging.ratelimit)
sender_key is the keyed hash of the phone number or the chat id: no phone number is ever a key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


class RedisStateStore:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, key: str) -> dict[str, Any] | None:
        return _decoded(key, await self.redis.get(key))

    async def set(self, key: str, state: dict[str, Any], ttl_seconds: int) -> None:
        await self.redis.set(key, _encoded(state), ex=ttl_seconds)

    async def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """One MGET."""
        if not keys:
            return []
        return [_decoded(key, raw) for key, raw in zip(keys, await self.redis.mget(list(keys)), strict=True)]

    async def save_many(self, changes: Sequence[tuple[str, dict[str, Any], int]]) -> None:
        """One pipelined exchange (not a transaction: each key stands alone)."""
        if not changes:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, state, ttl_seconds in changes:
                if ttl_seconds > 0:
                    pipe.set(key, _encoded(state), ex=ttl_seconds)
                else:
                    pipe.delete(key)
            await pipe.execute()

    async def delete(self, key: str) -> None:
        await self.redis.delete(key)


def _encoded(state: dict[str, Any]) -> str:
    return json.dumps(state, ensure_ascii=False, separators=(",", ":"))


def _decoded(key: str, raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("corrupt conversation state dropped", extra={"key": key})
        return None
    return value if isinstance(value, dict) else None
