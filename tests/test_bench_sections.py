"""bench/sections.py: the overhead and offline sections send more requests while their verdict is
undecided, up to the plan's cap, and stop as soon as it is decided (a stand-in engine, no models)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from bench import sections
from bench.options import Plan
from bench.workload import Clip

PLAN = replace(
    Plan.for_kind("quick"), overhead=10, overhead_max=30, flat=4, flat_max=12, warmup=1, latency=6, gap_max=30
)
CLIPS = [Clip(Path(f"clip-{i}.wav"), f"utterance {i}") for i in range(4)]


@dataclass
class _Scored:
    prediction: Any


@dataclass
class _Prediction:
    timings_ms: dict[str, float]
    context_size: int = 64


@dataclass
class StandInEngine:
    """`submit` answers with the next of `model_ms` as its model stage, after burning `cpu_ms(conversation)`
    of CPU (the offline section measures CPU time per request)."""

    model_ms: Iterator[float]
    cpu_ms: Any = None  # conversation id -> ms of CPU, or None
    requests: list[str] = field(default_factory=list)

    async def submit(self, request: Any) -> _Scored:
        cid = request.key.conversation_id
        self.requests.append(cid)
        if self.cpu_ms is not None:
            _burn(self.cpu_ms(cid))
        return _Scored(_Prediction({"store": 0.1, "model": next(self.model_ms)}))


def _burn(ms: float) -> None:
    end = time.process_time() + ms / 1000.0
    while time.process_time() < end:
        pass


@pytest.fixture(autouse=True)
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    async def prefill(engine: Any, key: Any, count: int, *, seed: int = 0) -> None:
        return None

    monkeypatch.setattr(sections, "prefill", prefill)
    monkeypatch.setattr(sections, "_time_network", lambda engine, repeats: {})
    monkeypatch.setattr(Clip, "data", b"")


def _overhead(model_ms: Iterator[float]) -> list[float]:
    engine = StandInEngine(model_ms)
    _, samples = asyncio.run(sections.run_overhead(engine, CLIPS, PLAN))
    assert len(engine.requests) == PLAN.warmup + len(samples)
    return samples


def test_overhead_decided_at_once_sends_no_more() -> None:
    assert len(_overhead(itertools.repeat(1.0))) == PLAN.overhead


def test_overhead_near_the_bound_is_measured_up_to_the_cap() -> None:
    # store 0.1 + model alternating around 5 ms: the median's interval straddles the bound
    samples = _overhead(itertools.cycle([4.6, 5.2]))
    assert len(samples) == PLAN.overhead_max


def _offline(cpu_ms: Any) -> dict[str, Any]:
    engine = StandInEngine(itertools.repeat(1.0), cpu_ms)
    figures, (early, late) = asyncio.run(sections.run_offline(engine, CLIPS, PLAN))
    assert len(early) == len(late) == figures["utterances_early"][1] - figures["utterances_early"][0] + 1
    return figures


def test_offline_pairs_of_equal_cost_are_decided_after_the_first_pairs() -> None:
    figures = _offline(lambda cid: 3.0)
    assert figures["utterances_early"][1] - figures["utterances_early"][0] + 1 == PLAN.flat


def test_offline_pairs_near_the_bound_are_measured_up_to_the_cap() -> None:
    # the late conversation costs 1.0x or 1.3x the early one by turns: the ratio straddles 1.15
    late_costs = itertools.cycle([3.0, 3.9])
    figures = _offline(lambda cid: next(late_costs) if cid.endswith("-b") else 3.0)
    assert figures["utterances_early"][1] - figures["utterances_early"][0] + 1 == PLAN.flat_max
    assert figures["utterances_late"][0] > 100  # the late conversation stays late


@dataclass
class StandInMode:
    """A concurrency-1 mode answering with the next of `latencies`."""

    name: str
    latencies: Iterator[float]
    pids: list[int] = field(default_factory=lambda: [os.getpid()])

    async def request(self, conversation_id: str, clip: Clip) -> float:
        return next(self.latencies)


def _gap_pairs(http: Iterator[float], first: int = 6) -> tuple[list[tuple[float, float]], dict[str, Any]]:
    from bench.runner import _more_gap_pairs
    from bench.sections import Section

    service, inproc = StandInMode("http", http), StandInMode("inproc", itertools.repeat(400.0))
    latency = {
        "http": Section(latencies=[next(service.latencies) for _ in range(first)]),
        "inproc": Section(latencies=[400.0] * first),
    }
    pairs = asyncio.run(_more_gap_pairs(latency, service, inproc, CLIPS, PLAN))
    return pairs, latency


def test_gap_pairs_are_added_only_while_the_gap_is_undecided() -> None:
    decided, latency = _gap_pairs(itertools.repeat(402.0))  # HTTP adds 2 ms to every request
    assert decided == [] and len(latency["http"].latencies) == 6
    # HTTP adds 5 or 25 ms by turns: the median sits on the 15 ms bound, so pairs up to the cap, kept apart
    noisy, latency = _gap_pairs(itertools.cycle([405.0, 425.0]))
    assert len(latency["http"].latencies) + len(noisy) == PLAN.gap_max
    assert all(local == 400.0 for _, local in noisy)


def test_the_gap_target_counts_the_extra_pairs() -> None:
    from bench.report import _targets

    samples = {
        "service_c1": [400.0, 460.0, 380.0, 420.0],
        "inproc_c1": [390.0, 400.0, 400.0, 400.0],
        "naive_c1": [],
        "floor_parts": [],
        "floor_accepted": {},
        "rounds_16": {},
        "overhead_ms": [1.0, 1.0],
        "flat_cpu_ms": ([1.0, 1.0], [1.0, 1.0]),
        "gap_pairs": [(402.0, 400.0)] * 40,
    }
    gap = _targets(samples, "http", {})["http_minus_inproc_ms"]
    assert gap["pairs"] == 44 and gap["value"] == 2.0 and gap["verdict"] == "pass"
