"""Conversation state in Redis: one JSON value per (channel, sender) key, with a TTL.

Keys (all under the gw: namespace):
  gw:conv:{channel}:{sender_key}  conversation state, JSON, expires after GATEWAY_CONVERSATION_TTL_SECONDS
  gw:rate:{sender}:{second}       send-rate window counters (messaging.ratelimit)
sender_key is the keyed hash of the phone number or the chat id: no phone number is ever a key.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)


class RedisStateStore:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("corrupt conversation state dropped", extra={"key": key})
            return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, state: dict[str, Any], ttl_seconds: int) -> None:
        await self.redis.set(key, json.dumps(state, ensure_ascii=False, separators=(",", ":")), ex=ttl_seconds)

    async def delete(self, key: str) -> None:
        await self.redis.delete(key)
