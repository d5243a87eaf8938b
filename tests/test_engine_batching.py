"""MicroBatcher: batches concurrent items, routes results and errors back, never strands a caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from app.batching import MicroBatcher


def doubler(record: list[list[int]]) -> MicroBatcher[int, int]:
    def run(items: Sequence[int]) -> list[int]:
        record.append(list(items))
        return [2 * i for i in items]

    return MicroBatcher("double", run, max_size=4, max_wait_s=0.05)


@pytest.mark.asyncio
async def test_results_go_back_to_their_callers_in_batches_up_to_max_size() -> None:
    record: list[list[int]] = []
    batcher = doubler(record)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert max(len(b) for b in record) == 4 and sum(len(b) for b in record) == 10
    await batcher.close()


@pytest.mark.asyncio
async def test_batch_function_runs_off_the_event_loop() -> None:
    threads: list[str] = []

    def run(items: Sequence[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher("where", run, max_size=2, max_wait_s=0)
    batcher.start()
    await batcher.submit(1)
    assert threads == [t for t in threads if t.startswith("lpgnet-where")] and threads
    await batcher.close()


@pytest.mark.asyncio
async def test_a_failing_item_fails_only_its_caller_and_the_next_batch_still_runs() -> None:
    batches: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher("fail", run, max_size=8, max_wait_s=0.02)
    batcher.start()
    results = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
    assert isinstance(results[0], ValueError) and results[1] == 1
    assert batches == [[13, 1], [13], [1]]  # the failed batch, then each item alone
    assert await batcher.submit(2) == 2
    await batcher.close()


@pytest.mark.asyncio
async def test_zero_wait_sends_a_lone_item_at_once() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("fast", lambda xs: list(xs), max_size=64, max_wait_s=0)
    batcher.start()
    started = time.perf_counter()
    assert await batcher.submit(7) == 7
    assert time.perf_counter() - started < 0.2
    await batcher.close()


@pytest.mark.asyncio
async def test_close_fails_queued_and_running_callers_instead_of_stranding_them() -> None:
    gate = threading.Event()

    def run(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher("slow", run, max_size=1, max_wait_s=0)
    batcher.start()
    running = asyncio.create_task(batcher.submit(1))
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.05)
    await batcher.close()
    gate.set()
    for task in (running, queued):
        with pytest.raises(RuntimeError, match="closed"):
            await task


@pytest.mark.asyncio
async def test_cancelled_callers_are_left_out_of_the_batch() -> None:
    record: list[list[int]] = []
    batcher = doubler(record)
    batcher.start()
    gone = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    gone.cancel()
    assert await batcher.submit(2) == 4
    assert all(1 not in batch for batch in record)
    await batcher.close()
