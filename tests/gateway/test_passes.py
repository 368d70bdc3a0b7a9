"""The background loops' common shape: a failed pass does not end the loop; work goes on at once; a wake
cuts the idle wait short."""

from __future__ import annotations

import asyncio

from gateway.passes import run_passes
from tests.waiting import until


async def test_a_failed_pass_is_followed_by_the_next():
    calls: list[int] = []

    async def one_pass() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a database hiccup")
        return 0

    loop = asyncio.create_task(run_passes(one_pass, interval_seconds=0.01, what="test"))
    await until(lambda: len(calls) >= 3, what="two passes after the failed one")
    assert not loop.done()
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert loop.cancelled()


async def test_work_goes_on_at_once_and_a_wake_ends_the_idle_wait():
    wake = asyncio.Event()
    backlog = [3]
    passes: list[float] = []

    async def one_pass() -> int:
        passes.append(asyncio.get_running_loop().time())
        if backlog[0]:
            backlog[0] -= 1
            return 1
        return 0

    loop = asyncio.create_task(run_passes(one_pass, interval_seconds=60, what="test", wake=wake))
    await until(lambda: len(passes) == 4, what="three passes with work, back to back, then one that found nothing")
    backlog[0] = 1
    woken_at = asyncio.get_running_loop().time()
    wake.set()
    await until(lambda: len(passes) == 6, what="the woken passes")
    # The loop was waiting (not polling) until the wake, and the wake cut the minute short.
    assert passes[4] >= woken_at and passes[5] - passes[0] < 30
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)


async def test_a_wake_during_an_idle_pass_is_not_lost():
    wake = asyncio.Event()
    passes: list[int] = []

    async def one_pass() -> int:
        passes.append(1)
        if len(passes) == 1:
            wake.set()  # a message arrives while this pass is finding nothing
        return 0

    loop = asyncio.create_task(run_passes(one_pass, interval_seconds=60, what="test", wake=wake))
    await until(lambda: len(passes) == 2, what="the second pass, at once rather than a minute later")
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
