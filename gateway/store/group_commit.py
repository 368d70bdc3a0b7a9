"""Group commit: requests that arrive at the same moment share one write.

Each `submit` waits for the writer's next pass, which hands every item waiting then (up to `max_batch`)
to `write` in one call, so many concurrent requests cost the database one transaction instead of one
each. `write` answers one result per item, in order. A pass that fails is tried again item by item, so
one bad item cannot refuse its neighbours; an item that fails alone is answered with `refusal(error)`.
Closing the writer, or cancelling it in the middle of a write, answers every request still waiting the
same way (with `CancelledError`), so none waits for ever. Used by the SMS inbox's webhook intake and by
single case reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int,
        refusal: Callable[[BaseException], BaseException | None],
        name: str,
    ) -> None:
        """`refusal(error)`: the exception a request whose item could not be written gets (None: the
        request is cancelled)."""
        self._write, self.max_batch, self._refusal, self._name = write, max_batch, refusal, name
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        self._kick.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting, self._waiting = self._waiting, []
        self._refuse(waiting, asyncio.CancelledError())

    async def _run(self) -> None:
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                while self._waiting:
                    batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                    try:
                        await self._pass(batch)
                    except asyncio.CancelledError as cancelled:
                        # Stopping mid-write (the batch's or an item's alone): no request may wait for ever.
                        self._refuse(batch, cancelled)
                        raise
        except asyncio.CancelledError as cancelled:
            waiting, self._waiting = self._waiting, []
            self._refuse(waiting, cancelled)
            raise

    async def _pass(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            self._settle(batch, await self._write([item for item, _ in batch]))
        except Exception as error:
            if len(batch) == 1:
                self._refuse(batch, error)
                return
            for one in batch:  # each on its own: a fault is answered to its own request only
                try:
                    self._settle([one], await self._write([one[0]]))
                except Exception as alone:
                    self._refuse([one], alone)

    @staticmethod
    def _settle(batch: list[tuple[Item, asyncio.Future[Result]]], results: list[Result]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _refuse(self, batch: list[tuple[Item, asyncio.Future[Result]]], error: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                refused = self._refusal(error)
                if refused is None:
                    future.cancel()
                else:
                    future.set_exception(refused)
