"""The measurements of a run, each one section of the report.

All run on one event loop; blocking model work runs in threads.

    latency      concurrency 1: request i of every mode runs before request i+1 of any mode, the
                 order rotating, so a burst of load from other processes hits all modes alike
    concurrency  C conversations at once, each sending its utterances one after another (closed loop);
                 modes alternate block by block, in rounds
    overhead     store + LPGNet time per request with K=64 utterances of context (engine timings)
    offline      the offline profile (MiniLM + prosody-8): single-request latency, and the cost of
                 utterance ~200 against utterance ~20 of a conversation, interleaved
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.options import CONTEXT_WINDOW, Plan
from bench.stats import Stopwatch, ratio, summarize
from bench.workload import Clip, clip_for

log = logging.getLogger("bench")


@dataclass
class Section:
    """Latencies and accounting of one mode within one section."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rounds_rps: list[float] = field(default_factory=list)  # closed-loop throughput of each round's block
    batch: dict[str, list[float]] = field(default_factory=dict)  # batcher -> [items, batches]
    parts: list[dict[str, float]] = field(default_factory=list)  # per request: the mode's `last_parts`

    def merge(self, other: Section) -> None:
        """Append another section's requests of the same mode (more requests of a noisy figure)."""
        self.latencies += other.latencies
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        self.rounds_rps += other.rounds_rps
        self.parts += other.parts
        for batcher, (items, count) in other.batch.items():
            acc = self.batch.setdefault(batcher, [0.0, 0.0])
            acc[0] += items
            acc[1] += count

    def figures(self) -> dict[str, Any]:
        n = len(self.latencies)
        out: dict[str, Any] = dict(summarize(self.latencies))
        out["throughput_rps"] = round(n / self.wall_s, 3) if self.wall_s else None
        out["cpu_ms_per_request"] = round(self.cpu_s * 1000 / n, 1) if n else None
        if len(self.rounds_rps) > 1:
            out["rounds_rps"] = [round(v, 3) for v in self.rounds_rps]
        if self.batch:
            out["mean_batch"] = {b: round(i / c, 2) for b, (i, c) in self.batch.items() if c}
        return out


def _rotate(items: Sequence[Any], by: int) -> list[Any]:
    k = by % len(items)
    return list(items[k:]) + list(items[:k])


async def run_latency(
    modes: Sequence[Any], clips: list[Clip], *, count: int, warmup: int = 0, start: int = 0
) -> dict[str, Section]:
    """Concurrency 1, interleaved request by request; each mode has one conversation.

    `start` continues an earlier call's request numbering (clips and rotation), so more requests of
    a noisy figure are sent as the first ones were. A mode with a `last_parts` dict (the floor's
    per-candidate timings) has it kept per measured request, aligned with the latencies.
    """
    sections = {m.name: Section() for m in modes}
    tag = uuid.uuid4().hex[:6]
    for i in range(start, start + warmup + count):
        clip = clip_for(clips, 0, i)
        for mode in _rotate(modes, i):
            with Stopwatch(mode.pids) as watch:
                latency = await mode.request(f"lat-{tag}-{mode.name}", clip)
            if i >= start + warmup:
                section = sections[mode.name]
                section.latencies.append(latency)
                section.wall_s += watch.wall_s
                section.cpu_s += watch.cpu_s
                if getattr(mode, "last_parts", None) is not None:
                    section.parts.append(dict(mode.last_parts))
    return sections


async def run_concurrency(
    modes: Sequence[Any],
    clips: list[Clip],
    level: int,
    plan: Plan,
    *,
    rounds: int | None = None,
    start: int = 0,
) -> dict[str, Section]:
    """`level` conversations at once, closed loop; modes alternate block by block, round by round.

    `plan.rounds` rounds unless `rounds` says otherwise; `start` continues an earlier call's round
    numbering (the rotation of the modes), for more rounds of a noisy figure.
    """
    turns = max(1, math.ceil(plan.requests / (level * plan.rounds)))
    sections = {m.name: Section() for m in modes}
    for r in range(start, start + (plan.rounds if rounds is None else rounds)):
        for mode in _rotate(modes, r):
            if hasattr(mode, "concurrency"):
                mode.concurrency(level)
            tag = f"c{level}-r{r}-{uuid.uuid4().hex[:6]}"
            latencies: list[float] = []

            async def conversation(
                j: int, mode: Any = mode, tag: str = tag, out: list[float] = latencies
            ) -> None:
                for k in range(turns):
                    out.append(await mode.request(f"{tag}-{mode.name}-{j}", clip_for(clips, j, k)))

            before = await mode.batch_counts()
            with Stopwatch(mode.pids) as watch:
                await asyncio.gather(*(conversation(j) for j in range(level)))
            section = sections[mode.name]
            section.latencies += latencies
            section.wall_s += watch.wall_s
            section.cpu_s += watch.cpu_s
            section.rounds_rps.append(len(latencies) / watch.wall_s)
            for batcher, (items, count) in _batch_delta(before, await mode.batch_counts()).items():
                acc = section.batch.setdefault(batcher, [0.0, 0.0])
                acc[0] += items
                acc[1] += count
            log.info(
                "  c=%d %-6s round %d: %d requests in %.1f s (%.2f req/s)",
                level,
                mode.name,
                r + 1,
                len(latencies),
                watch.wall_s,
                len(latencies) / watch.wall_s,
            )
    return sections


def _batch_delta(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    return {
        b: (after[b][0] - before.get(b, (0, 0))[0], after[b][1] - before.get(b, (0, 0))[1]) for b in after
    }


async def prefill(engine: Any, key: Any, count: int, *, seed: int = 0) -> None:
    """Store `count` utterances of random vectors in a conversation, as if it had gone on that long."""
    from app.store.base import NewUtterance, UtteranceMeta

    cfg = engine.checkpoint.config
    rng = np.random.default_rng(seed)
    for _ in range(count):
        meta = UtteranceMeta(
            token=uuid.uuid4().hex,
            utterance_id=None,
            content_hash="bench-prefill",
            created_at=time.time(),
            modalities=tuple(sorted(engine.encoders)),
        )
        text = rng.standard_normal(cfg.text_dim).astype(np.float16) if "text" in engine.encoders else None
        width = engine.workers.audio_dim  # the stored vector: with a voice expert's features if it has one
        audio = rng.standard_normal(width).astype(np.float16) if "audio" in engine.encoders else None
        await engine.store.append(key, NewUtterance(meta, text, audio))


async def run_overhead(engine: Any, clips: list[Clip], plan: Plan) -> tuple[dict[str, Any], list[float]]:
    """Store + LPGNet per request at K=64 context: text-only requests into a 64-utterance conversation,
    `plan.overhead` at a time while the verdict is undecided, up to `plan.overhead_max`.

    Returns the figures and the per-request overhead samples (ms) the verdict's interval is drawn from.
    """
    from app.store import ConversationKey
    from app.utterances import UtteranceRequest
    from bench.report import TARGET_OVERHEAD_MS
    from bench.verdict import decide, median_interval

    key = ConversationKey("", f"overhead-{uuid.uuid4().hex[:6]}")
    await prefill(engine, key, CONTEXT_WINDOW)
    store_ms, model_ms, overhead_ms, contexts = [], [], [], set()
    sent, wanted = 0, plan.warmup + plan.overhead
    while True:
        for i in range(sent, wanted):
            request = UtteranceRequest(key=key, transcript=clips[i % len(clips)].transcript)
            scored = await engine.submit(request)
            timings = scored.prediction.timings_ms
            contexts.add(scored.prediction.context_size)
            if i >= plan.warmup:
                store_ms.append(timings["store"])
                model_ms.append(timings["model"])
                overhead_ms.append(timings["store"] + timings["model"])
        sent = wanted
        interval = median_interval(overhead_ms)
        more = min(plan.overhead, plan.warmup + plan.overhead_max - sent)
        if more <= 0 or decide(interval, "<=", TARGET_OVERHEAD_MS) != "undecided":
            break
        log.info("overhead %s ms: undecided, %d more requests", interval, more)
        wanted = sent + more
    figures = {
        "context_size": sorted(contexts),
        "overhead": summarize(overhead_ms),
        "lpgnet_forward": await asyncio.to_thread(_time_network, engine, plan.overhead),
        "store": summarize(store_ms),
        "model": summarize(model_ms),
    }
    return figures, overhead_ms


def _time_network(engine: Any, repeats: int) -> dict[str, Any]:
    """LPGNet alone on one 64-utterance window, wall and CPU time, on the runtime the engine serves and
    as it serves it (the window's last row: `model.serving.last_row_logits`)."""
    import torch

    from model.serving import LastRowNetwork, last_row_logits

    torch.set_num_threads(engine.workers.torch_threads)  # as in the engine's own model thread
    cfg = engine.checkpoint.config
    rng = np.random.default_rng(0)
    text = torch.from_numpy(rng.standard_normal((1, CONTEXT_WINDOW, cfg.text_dim)).astype(np.float32))
    width = engine.workers.audio_dim  # as stored: a voice expert's features too, if the checkpoint has one
    audio = torch.from_numpy(rng.standard_normal((1, CONTEXT_WINDOW, width)).astype(np.float32))
    mask = torch.ones((1, CONTEXT_WINDOW), dtype=torch.bool)

    network = last_row_logits(engine.workers.network)

    def forward() -> None:
        network(text, audio, mask, mask)

    forward()
    wall, cpu = [], []
    for _ in range(max(repeats, 10)):
        with Stopwatch() as watch:
            forward()
        wall.append(watch.wall_s * 1000.0)
        cpu.append(watch.cpu_s * 1000.0)
    return {
        "backend": engine.backend,
        "last_row": isinstance(engine.workers.network, LastRowNetwork),  # False: every row computed
        "wall": summarize(wall),
        "cpu": summarize(cpu),
    }


async def run_offline(
    engine: Any, clips: list[Clip], plan: Plan
) -> tuple[dict[str, Any], tuple[list[float], list[float]]]:
    """Offline profile: requests at utterance ~20 and ~200 of two conversations, alternating, `plan.flat`
    pairs at a time while the cost verdict is undecided, up to `plan.flat_max`.

    Wall latency and this process's CPU time per request are both recorded: on a shared machine the
    CPU time is what tells a real difference in cost from a neighbour's burst of work. Returns the
    figures and the CPU ms of the (early, late) pairs, request by request, for the verdict's interval.
    """
    from app.store import ConversationKey
    from bench.modes import InProcessMode
    from bench.report import TARGET_FLAT_RATIO
    from bench.verdict import decide, paired_median_ratio

    mode = InProcessMode(engine)
    tag = uuid.uuid4().hex[:6]
    early, late = f"flat-{tag}-a", f"flat-{tag}-b"
    start_early, start_late = 20 - plan.flat // 2, 200 - plan.flat // 2
    for i in range(start_early):
        await mode.request(early, clip_for(clips, 0, i))
    if plan.flat_prefill == "requests":
        for i in range(start_late):
            await mode.request(late, clip_for(clips, 1, i))
    else:
        await prefill(engine, ConversationKey("", late), start_late)
    figures: dict[str, dict[str, list[float]]] = {
        side: {"wall": [], "cpu": [], "overhead": []} for side in ("early", "late")
    }
    pairs, wanted = 0, plan.flat
    while True:
        for i in range(pairs, wanted):
            for side, cid, turn in _rotate(
                [("early", early, start_early + i), ("late", late, start_late + i)], i
            ):
                with Stopwatch() as watch:
                    latency = await mode.request(cid, clip_for(clips, 0, turn))
                timings = mode.timings[-1]
                figures[side]["wall"].append(latency)
                figures[side]["cpu"].append(watch.cpu_s * 1000.0)
                figures[side]["overhead"].append(timings.get("store", 0.0) + timings.get("model", 0.0))
        pairs = wanted
        interval = paired_median_ratio(figures["late"]["cpu"], figures["early"]["cpu"])
        more = min(plan.flat, plan.flat_max - pairs)
        if more <= 0 or decide(interval, "<=", TARGET_FLAT_RATIO) != "undecided":
            break
        log.info("cost late / early %s: undecided, %d more pairs", interval, more)
        wanted = pairs + more
    summary = {side: {k: summarize(v) for k, v in f.items()} for side, f in figures.items()}
    offline = {
        "profile": "offline",
        "latency": summarize(figures["early"]["wall"] + figures["late"]["wall"]),
        "utterances_early": [start_early, start_early + pairs - 1],
        "utterances_late": [start_late, start_late + pairs - 1],
        **summary,
        "ratio_late_over_early_p50": ratio(
            summary["late"]["wall"].get("p50_ms"), summary["early"]["wall"].get("p50_ms")
        ),
        "cpu_ratio_late_over_early_p50": ratio(
            summary["late"]["cpu"].get("p50_ms"), summary["early"]["cpu"].get("p50_ms")
        ),
        "prefill": plan.flat_prefill,
    }
    return offline, (figures["early"]["cpu"], figures["late"]["cpu"])
