"""Micro-batching: concurrent requests share one call of a blocking batch function.

Each `MicroBatcher` owns one worker task and one single-thread executor. The worker takes the first
queued item, gathers more until `max_size` items or `max_wait_s` has passed, and runs the batch
function off the event loop. While a batch runs, new items queue up and form the next batch, so under
load batches fill up without any waiting; with `max_wait_s == 0` a lone request is never delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        """`thread_init` runs once in the batch thread before its first batch (e.g. thread settings)."""
        self.name = name
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"lpgnet-{name}", initializer=thread_init
        )

    def start(self) -> None:
        """Start the worker on the running loop (the queue belongs to that loop)."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def submit(self, item: Item) -> Result:
        """Queue one item and wait for its result (or the exception its batch raised)."""
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name!r} is not started")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _gather(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.done()]  # drop callers that gave up

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [i for i, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                self._fail(batch, RuntimeError(f"batcher {self.name!r} closed"))
                raise
            except Exception as exc:  # the callers get the error; the worker lives on
                if len(batch) == 1:
                    self._fail(batch, exc)
                else:  # one bad item must not fail its batch-mates: run each alone
                    await self._run_alone(batch)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def _run_alone(self, batch: Sequence[tuple[Item, asyncio.Future[Result]]]) -> None:
        loop = asyncio.get_running_loop()
        for item, fut in batch:
            try:
                (result,) = await loop.run_in_executor(self._executor, self._run_batch, [item])
            except asyncio.CancelledError:
                self._fail(batch, RuntimeError(f"batcher {self.name!r} closed"))
                raise
            except Exception as exc:
                self._fail([(item, fut)], exc)
            else:
                if not fut.done():
                    fut.set_result(result)

    @staticmethod
    def _fail(batch: Sequence[tuple[Item, asyncio.Future[Result]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            pending = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            self._fail(pending, RuntimeError(f"batcher {self.name!r} closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)
