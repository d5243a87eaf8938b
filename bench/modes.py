"""The four ways one utterance gets scored, behind one awaitable call each.

    floor    every way to run the encoders at batch 1, nothing else (`bench.floor.FloorMode`)
    naive    `bench.naive.NaivePipeline`: funasr generate + transformers forward + LPGNet, per request
    inproc   the service's `Engine.submit`, in this process (no HTTP)
    http     POST /conversations/{id}/utterances to the uvicorn process, multipart, over loopback

Every mode answers `await mode.request(conversation_id, clip) -> latency in ms` and keeps whatever
per-conversation state it needs, so the same driver runs all of them side by side.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from bench.naive import NaiveConversation, NaivePipeline
from bench.workload import Clip


class Mode(Protocol):
    name: str
    pids: list[int]  # the processes doing this mode's work (for CPU accounting)

    async def request(self, conversation_id: str, clip: Clip) -> float: ...

    async def batch_counts(self) -> dict[str, tuple[float, float]]:
        """(items, batches) so far per micro-batcher of the service ({} where there is none)."""
        ...


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class NaiveMode:
    """The naive pipeline, one thread per in-flight request (what a synchronous web handler gets).

    `threads`: torch intra-op threads of each request thread. Under concurrency the runner measures
    several counts side by side (`naive-t1`, `naive-t2`, ...) and reports the best.
    """

    def __init__(self, pipeline: NaivePipeline, *, threads: int, name: str = "naive") -> None:
        self.name = name
        self.pipeline = pipeline
        self.pids = [os.getpid()]
        self.threads = threads  # torch intra-op threads of each request thread
        self._conversations: dict[str, NaiveConversation] = {}
        self._workers = 1
        self._pool = self._new_pool(1)

    def _new_pool(self, workers: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            workers, thread_name_prefix="naive", initializer=lambda: torch.set_num_threads(self.threads)
        )

    def concurrency(self, workers: int) -> None:
        """Serve up to `workers` requests at once from here on."""
        if workers != self._workers:
            self._pool.shutdown(wait=True)
            self._pool = self._new_pool(workers)
            self._workers = workers

    def _run(self, conversation_id: str, clip: Clip) -> float:
        started = time.perf_counter()
        conversation = self._conversations.setdefault(conversation_id, NaiveConversation())
        self.pipeline.score(conversation, clip)
        return _ms(started)

    async def request(self, conversation_id: str, clip: Clip) -> float:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, conversation_id, clip)

    async def batch_counts(self) -> dict[str, tuple[float, float]]:
        return {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class InProcessMode:
    """`Engine.submit` awaited on this process's event loop: the service minus HTTP."""

    name = "inproc"

    def __init__(self, engine: Any, namespace: str = "") -> None:
        self.engine = engine
        self.namespace = namespace
        self.pids = [os.getpid()]
        self.timings: list[dict[str, float]] = []  # the engine's own stage timings, per request

    async def request(self, conversation_id: str, clip: Clip) -> float:
        from app.store import ConversationKey
        from app.utterances import UtteranceRequest

        request = UtteranceRequest(
            key=ConversationKey(self.namespace, conversation_id), transcript=clip.transcript, audio=clip.data
        )
        started = time.perf_counter()
        scored = await self.engine.submit(request)
        latency = _ms(started)
        self.timings.append(dict(scored.prediction.timings_ms))
        return latency

    async def batch_counts(self) -> dict[str, tuple[float, float]]:
        registry = self.engine.metrics.registry
        out = {}
        for batcher in ("text", "audio", "model"):
            total = registry.get_sample_value("lpgnet_batch_size_sum", {"batcher": batcher})
            count = registry.get_sample_value("lpgnet_batch_size_count", {"batcher": batcher})
            if total is not None and count is not None:
                out[batcher] = (total, count)
        return out


class HttpMode:
    """Multipart POSTs (audio file part + transcript) to the uvicorn process on loopback."""

    name = "http"

    def __init__(self, base_url: str, server_pid: int) -> None:
        import httpx

        self.pids = [os.getpid(), server_pid]  # the client's work counts too
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=600.0,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )

    async def request(self, conversation_id: str, clip: Clip) -> float:
        started = time.perf_counter()
        response = await self.client.post(
            f"/conversations/{conversation_id}/utterances",
            data={"transcript": clip.transcript},
            files={"audio": (clip.path.name, clip.data, "audio/wav")},
        )
        latency = _ms(started)
        if response.status_code != 200:
            raise RuntimeError(f"POST utterance answered {response.status_code}: {response.text[:300]}")
        return latency

    async def batch_counts(self) -> dict[str, tuple[float, float]]:
        """Read from the service's Prometheus metrics (lpgnet_batch_size_sum / _count per batcher)."""
        response = await self.client.get("/metrics")
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for line in response.text.splitlines():
            for prefix, into in (("lpgnet_batch_size_sum{", sums), ("lpgnet_batch_size_count{", counts)):
                if line.startswith(prefix):
                    labels, value = line[len(prefix) :].rsplit("} ", 1)
                    batcher = labels.split('batcher="', 1)[1].split('"', 1)[0]
                    into[batcher] = float(value)
        return {b: (sums[b], counts[b]) for b in sums if b in counts}

    async def close(self) -> None:
        await self.client.aclose()
