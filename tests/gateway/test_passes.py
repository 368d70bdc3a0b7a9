"""The background loops' common shape: a failed pass does not end the loop; work goes on at once; a wake
cuts the idle wait short; a stop lets the pass in flight finish, within a grace."""

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


async def test_a_stop_during_a_pass_lets_the_pass_finish_and_runs_no_other():
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    async def one_pass() -> int:
        started.set()
        await release.wait()  # a transaction or a send in flight
        finished.append(1)
        return 1

    loop = asyncio.create_task(run_passes(one_pass, interval_seconds=60, what="test", wake=asyncio.Event()))
    await started.wait()
    loop.cancel()
    await asyncio.sleep(0.05)
    assert not loop.done() and not finished  # the stop waits for the pass in flight
    release.set()
    await asyncio.gather(loop, return_exceptions=True)
    assert loop.cancelled() and finished == [1]


async def test_a_pass_that_outlasts_the_grace_is_cut():
    started = asyncio.Event()
    cut: list[bool] = []

    async def one_pass() -> int:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cut.append(True)
            raise
        return 0

    loop = asyncio.create_task(run_passes(one_pass, interval_seconds=60, what="test", grace_seconds=0.05))
    await started.wait()
    loop.cancel()
    await asyncio.wait_for(asyncio.gather(loop, return_exceptions=True), timeout=5)
    assert loop.cancelled() and cut == [True]
