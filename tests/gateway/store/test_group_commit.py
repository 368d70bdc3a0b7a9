"""Group commit (`gateway.store.group_commit`): requests that arrive together share one write; a failed
write is retried item by item so only the bad item is refused; closing answers every request still
waiting."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.group_commit import GroupCommit


class Refused(Exception):
    pass


def _refusal(error: BaseException) -> BaseException | None:
    return None if isinstance(error, asyncio.CancelledError) else Refused(str(error))


async def test_requests_that_arrive_together_share_one_write_and_get_their_own_results():
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        return [10 * i for i in items]

    commits = GroupCommit(write, max_batch=4, refusal=_refusal, name="test")
    results = await asyncio.gather(*(commits.submit(i) for i in range(6)))
    assert results == [0, 10, 20, 30, 40, 50]
    assert writes == [[0, 1, 2, 3], [4, 5]]  # at most max_batch a write, in arrival order
    await commits.close()


async def test_a_failed_write_is_tried_item_by_item_and_only_the_bad_item_is_refused():
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        if 3 in items:
            raise OSError("disk full")
        return items

    commits = GroupCommit(write, max_batch=10, refusal=_refusal, name="test")
    results = await asyncio.gather(*(commits.submit(i) for i in range(5)), return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4] == 4
    assert isinstance(results[3], Refused) and "disk full" in str(results[3])
    assert writes == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    await commits.close()


async def test_closing_answers_every_request_still_waiting():
    started, never = asyncio.Event(), asyncio.Event()

    async def stuck(items: list[int]) -> list[int]:
        started.set()
        await never.wait()
        return items

    commits = GroupCommit(stuck, max_batch=1, refusal=_refusal, name="test")
    in_write = asyncio.create_task(commits.submit(1))
    queued = asyncio.create_task(commits.submit(2))  # waiting for the next pass
    await started.wait()
    await commits.close()
    for request in (in_write, queued):
        with pytest.raises(asyncio.CancelledError):  # _refusal: cancelled, not left waiting
            await asyncio.wait_for(request, 5)


async def test_closing_while_items_are_retried_one_by_one_answers_all_of_them():
    retrying, never = asyncio.Event(), asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        if len(items) > 1:
            raise OSError("disk full")  # the batch fails: its items are tried alone
        retrying.set()
        await never.wait()
        return items

    commits = GroupCommit(write, max_batch=10, refusal=_refusal, name="test")
    requests = [asyncio.create_task(commits.submit(i)) for i in range(3)]
    await retrying.wait()
    late = asyncio.create_task(commits.submit(99))  # arrives while the writer is busy
    await asyncio.sleep(0)
    await commits.close()
    for request in [*requests, late]:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, 5)
