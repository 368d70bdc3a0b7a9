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


async def test_a_group_takes_all_its_locks_or_none(redis_url):  # type: ignore[no-untyped-def]
    first, second = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    try:
        mine, theirs = RedisLocks(first), RedisLocks(second)
        keys = ["sms:a", "sms:b", "sms:c"]
        async with theirs.hold("sms:b"):  # one citizen's conversation is busy elsewhere
            async with mine.hold_all_or_none(keys) as held:
                assert held is False
                # Nothing of the group was taken: the free keys stay free for others.
                assert await first.exists("gw:lock:sms:a", "gw:lock:sms:c") == 0
        async with mine.hold_all_or_none(keys) as held:
            assert held is True
            assert await first.exists(*(f"gw:lock:{k}" for k in keys)) == 3
            async with theirs.hold_all_or_none(["sms:c", "sms:d"]) as other:
                assert other is False  # overlapping groups never both hold
        assert await first.exists(*(f"gw:lock:{k}" for k in keys)) == 0  # all given back
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_group_whose_locks_expired_gives_back_only_its_own(redis_url):  # type: ignore[no-untyped-def]
    client = aioredis.from_url(redis_url)
    try:
        short = RedisLocks(client, ttl_ms=50)
        async with short.hold_all_or_none(["sms:x", "sms:y"]) as held:
            assert held
            await asyncio.sleep(0.1)  # expired; another process takes one of the keys
            assert await client.set("gw:lock:sms:y", "someone-else", nx=True, px=5000)
        assert await client.get("gw:lock:sms:y") == b"someone-else"
    finally:
        await client.aclose()


async def test_local_group_locks_take_all_or_none():
    from gateway.store.locks import LocalLocks

    locks = LocalLocks()
    async with locks.hold("sms:b"):
        async with locks.hold_all_or_none(["sms:a", "sms:b"]) as held:
            assert held is False
    async with locks.hold_all_or_none(["sms:a", "sms:b"]) as held:
        assert held is True
        async with locks.hold_all_or_none(["sms:b", "sms:c"]) as other:
            assert other is False
        waiter = asyncio.create_task(_enter(locks, "sms:a"))
        await asyncio.sleep(0.01)
        assert not waiter.done()  # a single conversation waits for the group
    await asyncio.wait_for(waiter, 1)
    assert locks._locks == {} and locks._users == {}  # nothing kept for idle keys


async def _enter(locks, key):  # type: ignore[no-untyped-def]
    async with locks.hold(key):
        return True
