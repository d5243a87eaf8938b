"""Bounded load on loopback, from an asyncio client of our own, and the in-memory store's bound.

CI runs a short form. The long form, for manual runs (a few minutes on a laptop):

    LPGNET_LOAD_FULL=1 python3 -m pytest tests/test_reliability_load.py -s

It runs 200 conversations x 10 utterances (a fifth with audio) against the in-memory store and
against Redis, and 10,000 conversations through the HTTP API against an in-memory bound of 1,000.
`-s` shows the throughput, latency and memory each run reports.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import statistics
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from app.main import create_app
from app.store import ConversationKey, MemoryStore
from app.store.base import NewUtterance, UtteranceMeta
from tests.app_fixtures import make_prediction, wav_bytes
from tests.reliability_support import asgi_client, serve_in_thread

FULL = os.environ.get("LPGNET_LOAD_FULL") == "1"
# (conversations, utterances each, conversations in flight at once)
LOAD = (200, 10, 50) if FULL else (50, 8, 25)
# (conversations posted, in-memory bound)
EVICTION = (10_000, 1_000) if FULL else (2_000, 200)


@dataclass
class LoadReport:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    acknowledged: dict[str, list[int]] = field(default_factory=dict)  # conversation -> indices answered
    seconds: float = 0.0

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
        total = sum(self.statuses.values())
        mean = statistics.fmean(lat) if lat else float("nan")
        return (
            f"{total} requests in {self.seconds:.1f} s ({total / max(self.seconds, 1e-9):.0f}/s), "
            f"statuses {dict(self.statuses)}, latency p50 {p(0.5):.1f} ms p99 {p(0.99):.1f} ms "
            f"max {p(1.0):.1f} ms, mean {mean:.1f} ms"
        )


async def run_load(base_url: str, conversations: int, utterances: int, in_flight: int) -> LoadReport:
    """Each conversation is a call: its client sends the next utterance once the last is answered."""
    report = LoadReport()
    audio = [wav_bytes(seconds=0.4, seed=s) for s in range(4)]
    gate = asyncio.Semaphore(in_flight)
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def call(c: int) -> None:
            cid = f"load-{c}-{uuid.uuid4().hex[:8]}"
            report.acknowledged[cid] = []
            async with gate:
                for i in range(utterances):
                    data = {
                        "transcript": f"call {c} turn {i}: " + rng.choice(["fine", "angry", "why"]) * (i + 1),
                        "utterance_id": f"t{i}",
                    }
                    files = (
                        {"audio": ("a.wav", audio[(c + i) % 4], "audio/wav")} if (c + i) % 5 == 0 else None
                    )
                    started = time.perf_counter()
                    try:
                        r = await client.post(f"/conversations/{cid}/utterances", data=data, files=files)
                    except httpx.HTTPError as exc:
                        report.errors.append(f"{cid} t{i}: {type(exc).__name__}")
                        continue
                    report.latencies_ms.append((time.perf_counter() - started) * 1000)
                    report.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        report.acknowledged[cid].append(r.json()["index"])
                    else:
                        report.errors.append(f"{cid} t{i}: {r.status_code} {r.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(call(c) for c in range(conversations)))
        report.seconds = time.perf_counter() - started

        # every acknowledged utterance is there, in the order it was answered
        for cid, indices in report.acknowledged.items():
            r = await client.get(f"/conversations/{cid}")
            assert r.status_code == 200, r.text
            stored = r.json()
            assert stored["utterance_count"] == len(indices) == utterances, (cid, stored["utterance_count"])
            assert [u["index"] for u in stored["utterances"]] == indices == list(range(utterances))
            assert all(u["prediction"] is not None for u in stored["utterances"])
    return report


@pytest.mark.parametrize("store_settings", ["memory", "redis"] if FULL else ["memory"], indirect=True)
def test_bounded_load_on_loopback_has_no_5xx_and_loses_no_utterance(
    make_settings: Callable[..., Any],
    store_settings: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conversations, utterances, in_flight = LOAD
    settings = make_settings(batch_max_wait_ms=2, context_window=8, **store_settings)
    with serve_in_thread(create_app(settings)) as url:
        report = asyncio.run(run_load(url, conversations, utterances, in_flight))
    store = "redis" if settings.redis_url else "memory"
    with capsys.disabled():
        print(f"\n[load {store} {conversations}x{utterances}] {report.summary()}")
    assert not report.errors, report.errors[:10]
    assert set(report.statuses) == {200}
    assert sum(len(v) for v in report.acknowledged.values()) == conversations * utterances


# ---- the in-memory bound ----------------------------------------------------------------------------


def _rss_bytes(metrics_text: str) -> float:
    match = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", metrics_text, re.M)
    assert match, "process memory is not reported in /metrics"
    return float(match.group(1))


def _metric(metrics_text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", metrics_text, re.M)
    assert match, name
    return float(match.group(1))


@pytest.mark.asyncio
async def test_many_conversations_stay_within_the_in_memory_bound_and_metrics_report_it(
    make_settings: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    posted, bound = EVICTION
    settings = make_settings(max_conversations=bound, batch_max_wait_ms=2, batch_max_size=64)
    async with asgi_client(create_app(settings)) as client:
        gate = asyncio.Semaphore(64)

        async def one(c: int) -> None:
            async with gate:
                r = await client.post(
                    f"/conversations/conv-{c}/utterances", json={"transcript": f"hello {c}"}
                )
                assert r.status_code == 200, r.text

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(posted)))
        seconds = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "lpgnet_active_conversations") == bound
        assert _metric(metrics, 'lpgnet_evicted_conversations{bound="conversations"}') == posted - bound
        assert _metric(metrics, 'lpgnet_evicted_conversations{bound="bytes"}') == 0
        rss = _rss_bytes(metrics)
        # least recently written first: the oldest are gone, the newest there (64 in flight blur the edge)
        for c in range(0, posted - bound - 128, max(1, posted // 50)):
            assert (await client.get(f"/conversations/conv-{c}")).status_code == 404
        for c in range(posted - bound // 4, posted):
            assert (await client.get(f"/conversations/conv-{c}")).status_code == 200
    with capsys.disabled():
        print(
            f"\n[eviction] {posted} conversations through HTTP in {seconds:.1f} s, bound {bound}: "
            f"{bound} kept, {posted - bound} evicted, process RSS {rss / 2**20:.0f} MiB"
        )


def _utterance(vectors: list[np.ndarray]) -> NewUtterance:
    meta = UtteranceMeta(
        token=uuid.uuid4().hex,
        utterance_id=uuid.uuid4().hex[:12],
        content_hash=uuid.uuid4().hex,
        created_at=time.time(),
        modalities=("text", "audio"),
        speaker="caller",
    )
    return NewUtterance(meta, vectors[0], vectors[1])


@pytest.mark.slow
@pytest.mark.asyncio
async def test_ten_thousand_conversations_take_the_memory_of_the_bound_not_of_the_total(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """10,000 conversations of production-size vectors (768 + 768 float16) into a bound of 1,000: the
    store's memory after all of them is what it was once the bound was first reached."""
    bound, total, per_conversation, dims = 1_000, 10_000, 2, (768, 768)
    store = MemoryStore(ttl_s=3600, max_conversations=bound, max_utterances=1000, vectors_kept=128)
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(d).astype(np.float32) for d in dims]  # stored as float16 copies
    prediction = make_prediction()

    async def fill(conversations: range) -> None:
        for c in conversations:
            key = ConversationKey("", f"c-{c}")
            for _ in range(per_conversation):
                stored = (await store.append(key, _utterance(vectors))).utterance
                await store.set_prediction(key, stored.index, stored.meta.token, prediction)

    gc.collect()
    tracemalloc.start()
    try:
        await fill(range(bound))
        gc.collect()
        at_bound, _ = tracemalloc.get_traced_memory()
        await fill(range(bound, total))
        gc.collect()
        at_total, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert await store.count_active() == bound
    assert store.evicted == total - bound
    assert await store.conversation(ConversationKey("", "c-0")) is None
    assert await store.conversation(ConversationKey("", f"c-{total - 1}")) is not None
    assert at_total < 1.1 * at_bound, (at_bound, at_total)
    per_conv = at_bound / bound
    with capsys.disabled():
        print(
            f"\n[memory bound] {total} conversations x {per_conversation} utterances, bound {bound}: "
            f"{at_bound / 2**20:.1f} MiB at the bound, {at_total / 2**20:.1f} MiB after all "
            f"({per_conv / 1024:.1f} KiB per conversation of {per_conversation})"
        )
