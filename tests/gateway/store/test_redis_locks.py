"""RedisLocks against a live Redis: two clients serialise on one key, and a holder whose lock expired
cannot release the lock another now holds."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from gateway.store.locks import RedisLocks


async def test_two_clients_serialise_on_one_lock(redis_url):  # type: ignore[no-untyped-def]
    first, second = aioredis.from_url(redis_url), aioredis.from_url(redis_url)  # two processes' connections
    try:
        locks = [RedisLocks(first), RedisLocks(second)]
        inside: list[int] = []
        overlaps: list[int] = []
        order: list[str] = []

        async def work(locks: RedisLocks, name: str) -> None:
            async with locks.hold("sms:citizen-1"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                order.append(f"{name} in")
                await asyncio.sleep(0.02)
                order.append(f"{name} out")
                inside.pop()

        await asyncio.gather(*(work(locks[i % 2], f"w{i}") for i in range(6)))
        assert overlaps == []
        assert len(order) == 12 and all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, 12, 2))
        # Another key is not held up by this one.
        async with locks[0].hold("sms:citizen-1"):
            async with locks[1].hold("sms:citizen-2"):
                pass
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_expired_holder_cannot_release_another_holders_lock(redis_url):  # type: ignore[no-untyped-def]
    first, second = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    try:
        slow = RedisLocks(first, ttl_ms=50)
        fast = RedisLocks(second, wait_seconds=5)
        taken = asyncio.Event()
        release_slow = asyncio.Event()

        async def slow_holder() -> None:
            async with slow.hold("k"):
                taken.set()
                await release_slow.wait()  # outlives its 50 ms lock

        holder = asyncio.create_task(slow_holder())
        await taken.wait()
        async with fast.hold("k"):  # the lock expired: the second client takes it
            token = await second.get("gw:lock:k")
            release_slow.set()
            await holder  # the first holder leaves and "releases": it must not delete the new lock
            assert await second.get("gw:lock:k") == token
        assert await second.get("gw:lock:k") is None  # the rightful holder released it
    finally:
        await first.aclose()
        await second.aclose()
