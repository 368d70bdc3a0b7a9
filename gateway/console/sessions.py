"""Server-side sessions: Redis when configured, the database on the embedded default.

The cookie holds a random token; the store keys the session by the token's SHA-256, so reading the
store does not give anyone a usable cookie. A session ends after `idle_seconds` without a request,
after `max_seconds` in all, at sign-out, and when the account is disabled or reset.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete
from sqlmodel import col

from gateway.clock import as_utc
from gateway.console.accounts import token_hash
from gateway.console.models import ConsoleSession
from gateway.store.db import Store

TOUCH_EVERY = timedelta(seconds=60)  # last-seen is written at most once a minute per session


@dataclass
class SessionData:
    user_id: int
    csrf: str
    created_at: datetime
    last_seen_at: datetime


class Sessions(Protocol):
    async def create(self, user_id: int, at: datetime) -> tuple[str, SessionData]: ...
    async def get(self, token: str, at: datetime) -> SessionData | None: ...
    async def end(self, token: str) -> None: ...
    async def end_all(self, user_id: int) -> None: ...


@dataclass(frozen=True)
class Lifetime:
    idle_seconds: int
    max_seconds: int

    def alive(self, data: SessionData, at: datetime) -> bool:
        return (at - as_utc(data.last_seen_at)).total_seconds() < self.idle_seconds and (
            at - as_utc(data.created_at)
        ).total_seconds() < self.max_seconds


def _new(user_id: int, at: datetime) -> tuple[str, SessionData]:
    return secrets.token_urlsafe(32), SessionData(
        user_id=user_id, csrf=secrets.token_urlsafe(32), created_at=at, last_seen_at=at
    )


class DatabaseSessions:
    def __init__(self, store: Store, lifetime: Lifetime) -> None:
        self.store, self.lifetime = store, lifetime

    async def create(self, user_id: int, at: datetime) -> tuple[str, SessionData]:
        token, data = _new(user_id, at)
        async with self.store.transaction() as session:
            session.add(
                ConsoleSession(id=token_hash(token), user_id=user_id, csrf=data.csrf, created_at=at, last_seen_at=at)
            )
        return token, data

    async def get(self, token: str, at: datetime) -> SessionData | None:
        if not token or len(token) > 100:
            return None
        async with self.store.transaction() as session:
            row = await session.get(ConsoleSession, token_hash(token))
            if row is None:
                return None
            data = SessionData(
                user_id=row.user_id,
                csrf=row.csrf,
                created_at=as_utc(row.created_at),
                last_seen_at=as_utc(row.last_seen_at),
            )
            if not self.lifetime.alive(data, at):
                await session.delete(row)
                return None
            if at - data.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = data.last_seen_at = at
        return data

    async def end(self, token: str) -> None:
        async with self.store.transaction() as session:
            statement = delete(ConsoleSession).where(col(ConsoleSession.id) == token_hash(token))
            await session.exec(statement)

    async def end_all(self, user_id: int) -> None:
        async with self.store.transaction() as session:
            statement = delete(ConsoleSession).where(col(ConsoleSession.user_id) == user_id)
            await session.exec(statement)


class RedisSessions:
    """One key per session (expiring with the idle time) and a set of a person's sessions, to end them all."""

    PREFIX = "console:session:"

    def __init__(self, redis: Any, lifetime: Lifetime) -> None:
        self.redis, self.lifetime = redis, lifetime

    def _key(self, token: str) -> str:
        return self.PREFIX + token_hash(token)

    def _user_key(self, user_id: int) -> str:
        return f"console:user-sessions:{user_id}"

    @staticmethod
    def _dump(data: SessionData) -> str:
        return json.dumps(
            {
                "user_id": data.user_id,
                "csrf": data.csrf,
                "created_at": data.created_at.isoformat(),
                "last_seen_at": data.last_seen_at.isoformat(),
            }
        )

    async def create(self, user_id: int, at: datetime) -> tuple[str, SessionData]:
        token, data = _new(user_id, at)
        key = self._key(token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, self._dump(data), ex=self.lifetime.idle_seconds)
            pipe.sadd(self._user_key(user_id), key)
            pipe.expire(self._user_key(user_id), self.lifetime.max_seconds)
            await pipe.execute()
        return token, data

    async def get(self, token: str, at: datetime) -> SessionData | None:
        if not token or len(token) > 100:
            return None
        key = self._key(token)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        stored = json.loads(raw)
        data = SessionData(
            user_id=int(stored["user_id"]),
            csrf=stored["csrf"],
            created_at=datetime.fromisoformat(stored["created_at"]),
            last_seen_at=datetime.fromisoformat(stored["last_seen_at"]),
        )
        if not self.lifetime.alive(data, at):
            await self.redis.delete(key)
            return None
        if at - data.last_seen_at >= TOUCH_EVERY:
            data.last_seen_at = at
            await self.redis.set(key, self._dump(data), ex=self.lifetime.idle_seconds, xx=True)
        return data

    async def end(self, token: str) -> None:
        await self.redis.delete(self._key(token))

    async def end_all(self, user_id: int) -> None:
        keys = await self.redis.smembers(self._user_key(user_id))
        if keys:
            await self.redis.delete(*keys)
        await self.redis.delete(self._user_key(user_id))
