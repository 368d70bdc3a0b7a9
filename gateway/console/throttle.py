"""Sign-in throttling per account and per address, shared by every process (Redis, else the database).

Failures are counted in a sliding window; a successful sign-in clears the account's count. While a key
is over its limit, sign-in is refused without checking the password, so guessing costs the guesser time
and the server no hashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func
from sqlmodel import col, select

from gateway.clock import as_utc
from gateway.console.models import ConsoleAudit
from gateway.store.db import Store


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window_seconds: int


class Throttle(Protocol):
    async def blocked(self, login: str, address: str, at: datetime) -> bool: ...
    async def failed(self, login: str, address: str, at: datetime) -> None: ...
    async def succeeded(self, login: str, at: datetime) -> None: ...


class DatabaseThrottle:
    """Counts the audit trail's failures (written by the sign-in itself), since the account's last success."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self.store, self.limits = store, limits

    async def blocked(self, login: str, address: str, at: datetime) -> bool:
        since = at - timedelta(seconds=self.limits.window_seconds)
        async with self.store.transaction() as session:
            last_ok = (
                await session.exec(
                    select(func.max(ConsoleAudit.at)).where(ConsoleAudit.kind == "sign_in", ConsoleAudit.login == login)
                )
            ).first()
            account_since = max(since, as_utc(last_ok)) if last_ok is not None else since
            by_account = (
                await session.exec(
                    select(func.count())
                    .select_from(ConsoleAudit)
                    .where(
                        ConsoleAudit.kind == "sign_in_failed",
                        ConsoleAudit.login == login[:64],
                        col(ConsoleAudit.at) > account_since,
                    )
                )
            ).one()
            by_address = (
                await session.exec(
                    select(func.count())
                    .select_from(ConsoleAudit)
                    .where(
                        ConsoleAudit.kind == "sign_in_failed",
                        ConsoleAudit.address == address[:64],
                        col(ConsoleAudit.at) > since,
                    )
                )
            ).one()
        return by_account >= self.limits.per_account or by_address >= self.limits.per_address

    async def failed(self, login: str, address: str, at: datetime) -> None:
        """Nothing to add: the failure's audit row is the count."""

    async def succeeded(self, login: str, at: datetime) -> None:
        """Nothing to clear: the sign-in's audit row starts the account's count afresh."""


class RedisThrottle:
    """A counter per key, expiring a window after the first failure."""

    def __init__(self, redis: Any, limits: Limits) -> None:
        self.redis, self.limits = redis, limits

    @staticmethod
    def _keys(login: str, address: str) -> tuple[str, str]:
        return f"console:signin-fail:account:{login[:64]}", f"console:signin-fail:address:{address[:64]}"

    async def blocked(self, login: str, address: str, at: datetime) -> bool:
        account, addr = await self.redis.mget(*self._keys(login, address))
        return int(account or 0) >= self.limits.per_account or int(addr or 0) >= self.limits.per_address

    async def failed(self, login: str, address: str, at: datetime) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._keys(login, address):
                pipe.incr(key)
                pipe.expire(key, self.limits.window_seconds, nx=True)
            await pipe.execute()

    async def succeeded(self, login: str, at: datetime) -> None:
        await self.redis.delete(self._keys(login, "")[0])
