"""One benchmark run: every figure measured in the same process lifetime, side by side, interleaved.

Sections, in order (all on one event loop; blocking model work runs in threads):

    setup        production-size random encoders and matching checkpoints (cached), the uvicorn
                 service started in its own process, the in-process engine, the naive pipeline
                 (`bench.serving`) and the floor's candidates (`bench.floor`)
    latency      concurrency 1, every mode interleaved request by request (`bench.sections`); more
                 floor + service requests while p50 / floor is undecided (`bench.verdict`)
    concurrency  C conversations at once, closed loop, modes alternating block by block; the naive
                 baseline at several thread counts; more rounds at 16 while throughput is undecided
    overhead     store + LPGNet time per request with K=64 utterances of context
    offline      the offline profile: single-request latency, utterance ~200 against ~20

This module runs them in that order and hands the figures, and the samples the verdicts' intervals
are drawn from, to `bench.report`; the options and the per-kind request counts are in `bench.options`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import time
from typing import Any

from bench.options import CONTEXT_WINDOW, BenchOptions, Plan
from bench.sections import Section, run_concurrency, run_latency, run_offline, run_overhead
from bench.serving import (
    close_engine,
    encoder_dirs,
    export_graphs,
    graph_cache,
    load_engine,
    prepare_served,
    service_settings,
    torch_encoders,
)
from bench.stats import CpuShare, Stopwatch, machine_facts, peak_rss_mb
from bench.workload import load_clips

log = logging.getLogger("bench")
TARGET_LEVEL = 16  # the throughput target's number of conversations


def run_bench(quick: bool = False, **options: Any) -> dict[str, Any]:
    """Run the benchmark, write the JSON report to `out` and return it (the `lpgnet bench` entry).

    `options`: `smoke` and the fields of `BenchOptions` (see `BenchOptions.create`).
    """
    opts = BenchOptions.create(quick=quick, **options)
    report = asyncio.run(_run(opts))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("report written to %s", opts.out)
    return report


async def _run(opts: BenchOptions) -> dict[str, Any]:
    import torch

    from bench.floor import FloorMode, build_candidates, candidate_name, floor_figures
    from bench.modes import HttpMode, InProcessMode, NaiveMode
    from bench.naive import NaivePipeline
    from bench.report import build_report
    from bench.server import ServiceProcess

    started = time.perf_counter()
    # the naive baseline gets torch's default (what its user gets) unless --threads says otherwise;
    # the service's model threads set their own count (LPGNET_TORCH_THREADS, 1 on CPU by default)
    threads = opts.threads or torch.get_num_threads()
    facts = machine_facts(threads)
    cpu_share, own_cpu_at_start = CpuShare(), Stopwatch().cpu_seconds()
    plan = opts.plan
    clips = load_clips()
    log.info("bench %s: backend %s, naive on %d threads, plan %s", opts.kind, opts.backend, threads, plan)

    main, offline = await asyncio.to_thread(prepare_served, opts)
    if opts.precision != "bf16":
        await asyncio.to_thread(export_graphs, main, opts)  # once, before three loaders want them
    settings = service_settings(main, opts)
    server: ServiceProcess | None = None
    engine = offline_engine = http_mode = None
    naive_modes: list[NaiveMode] = []
    own_pids = [os.getpid()]
    try:
        if opts.http:
            server = ServiceProcess(settings, opts.out.parent / "server.log")
            server.start()  # loads while this process loads its own models
            own_pids.append(server.pid)
        log.info("loading the in-process engine, the naive pipeline and the floor's candidates")
        engine = await load_engine(main, opts)
        model_threads = engine.workers.torch_threads
        facts["service_torch_threads"] = model_threads
        text_dir, audio_dir = encoder_dirs(main)
        reference = await asyncio.to_thread(torch_encoders, engine, main)  # PyTorch fp32
        naive = await asyncio.to_thread(
            NaivePipeline.sharing, reference, text_dir, audio_dir, main.checkpoint
        )
        candidates, unavailable = await asyncio.to_thread(
            build_candidates, reference, cache=graph_cache(opts), cores=facts["cores"]
        )
        floor = FloorMode(candidates)
        await asyncio.to_thread(floor.prepare, clips)
        naive_modes.append(NaiveMode(naive, threads=threads))
        # under load the naive baseline at its best thread count per request thread (1, 2, torch's default)
        naive_modes += [NaiveMode(naive, threads=t, name=f"naive-t{t}") for t in sorted({1, 2, threads})]
        inproc = InProcessMode(engine)
        modes: list[Any] = [floor, naive_modes[0], inproc]
        if server is not None:
            await asyncio.to_thread(server.wait_ready)
            http_mode = HttpMode(server.url, server.pid)
            modes.append(http_mode)
        service = http_mode or inproc
        log.info(
            "ready after %.0f s; latency at concurrency 1 (%d requests per mode)",
            time.perf_counter() - started,
            plan.latency,
        )

        latency = await run_latency(modes, clips, count=plan.latency, warmup=plan.warmup)
        engine_timings = inproc.timings[plan.warmup :]  # the engine's stages at concurrency 1
        await _more_latency(latency, floor, service, inproc, clips, plan)
        gap_pairs = await _more_gap_pairs(latency, service, inproc, clips, plan)
        variants = naive_modes[1:]
        loaded = [*variants, *(m for m in modes[2:] if plan.inproc_under_load or m is service)]
        levels: dict[int, dict[str, Section]] = {}
        for level in opts.concurrency:
            if level == 1:
                levels[1] = {m.name: latency[m.name] for m in modes if m is not floor}
                continue
            log.info("concurrency %d", level)
            levels[level] = await run_concurrency(loaded, clips, level, plan)
            if level == TARGET_LEVEL:
                await _more_rounds(levels[level], [*variants, service], clips, plan)

        log.info("overhead at %d utterances of context", CONTEXT_WINDOW)
        overhead, overhead_ms = await run_overhead(engine, clips, plan)
        server_rss = peak_rss_mb(server.pid) if server is not None else None

        log.info("offline profile (%s)", offline.checkpoint.name)
        offline_engine = await load_engine(offline, opts)
        offline_figures, flat_pairs = await run_offline(offline_engine, clips, plan)
        own_cpu = Stopwatch(own_pids).cpu_seconds() - own_cpu_at_start
        others_cpu_pct = cpu_share.others_pct(own_cpu)  # before a process of ours that is not counted
        elapsed_s = time.perf_counter() - started  # the measured run, without the lone start below
        starts = {}
        if server is not None:
            starts[main.profile] = {
                "time_to_ready_s": server.ready_after_s,
                "rss_mb": server_rss,
                "alone": False,
            }
            log.info("a lone start of the %s profile's service", offline.profile)
            starts[offline.profile] = await asyncio.to_thread(_lone_start, offline, opts)
        alone = engine.workers.cores.alone  # a lone request: the latency the floor is compared with
        served = {m: candidate_name(e, alone) for m, e in engine.encoders.items()}
        floor_parts = latency.pop("floor").parts
        return build_report(
            opts=opts,
            plan=plan,
            facts=facts,
            settings=settings,
            latency={name: s.figures() for name, s in latency.items()},
            floor=floor_figures(floor, floor_parts, served, unavailable),
            levels={
                lvl: _figures(by_mode, {v.name: v.threads for v in variants})
                for lvl, by_mode in levels.items()
            },
            engine_timings=engine_timings,
            overhead=overhead,
            offline=offline_figures,
            samples={
                "service_c1": latency[service.name].latencies,
                "naive_c1": latency["naive"].latencies if "naive" in latency else [],
                "inproc_c1": latency["inproc"].latencies if "inproc" in latency else [],
                "gap_pairs": gap_pairs,
                "floor_parts": floor_parts,
                "floor_accepted": floor.accepted(),
                "rounds_16": {name: s.rounds_rps for name, s in levels.get(TARGET_LEVEL, {}).items()},
                "overhead_ms": overhead_ms,
                "flat_cpu_ms": flat_pairs,
            },
            time_to_ready_s=server.ready_after_s if server is not None else None,
            server_rss_mb=server_rss,
            starts=starts,
            bench_rss_mb=peak_rss_mb(),
            others_cpu_pct=others_cpu_pct,
            elapsed_s=elapsed_s,
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    finally:
        if http_mode is not None:
            await http_mode.close()
        for mode in naive_modes:
            mode.close()
        for e in (engine, offline_engine):
            if e is not None:
                with contextlib.suppress(Exception):
                    await close_engine(e)
        if server is not None:
            server.stop()


def _lone_start(served: Any, opts: BenchOptions) -> dict[str, Any]:
    """Time to /ready and RSS after it of a service process started with nothing else loading (its
    graphs are in the cache: the in-process engine of the same profile wrote them, as the image's
    build-time start does)."""
    from bench.server import ServiceProcess

    process = ServiceProcess(service_settings(served, opts), opts.out.parent / "server-lone.log")
    process.start()
    try:
        process.wait_ready()
        return {"time_to_ready_s": process.ready_after_s, "rss_mb": peak_rss_mb(process.pid), "alone": True}
    except (RuntimeError, TimeoutError) as exc:  # the measured run's report is kept; this start says why
        log.warning("the lone start of the %s profile failed: %s", served.profile, exc)
        return {"time_to_ready_s": None, "rss_mb": None, "alone": True, "error": str(exc)}
    finally:
        process.stop()


async def _more_latency(
    latency: dict[str, Section], floor: Any, service: Any, inproc: Any, clips: list[Any], plan: Plan
) -> None:
    """More interleaved (floor, service[, in-process]) requests while p50 / floor or HTTP - in-process
    is undecided, up to the plan's cap; the three stay paired request by request."""
    from bench.report import TARGET_HTTP_GAP_MS, TARGET_P50_OVER_FLOOR
    from bench.verdict import decide, median_paired_difference, p50_over_floor

    own = latency[service.name]
    paired = inproc is not service  # service over HTTP: its gap to in-process is a target too
    modes = [floor, service, inproc] if paired else [floor, service]
    while (measured := len(own.latencies)) < plan.latency_max:
        _, interval = p50_over_floor(own.latencies, latency["floor"].parts, floor.accepted())
        gap = median_paired_difference(own.latencies, latency[inproc.name].latencies)[1] if paired else None
        if decide(interval, "<=", TARGET_P50_OVER_FLOOR) != "undecided" and (
            not paired or decide(gap, "<=", TARGET_HTTP_GAP_MS) != "undecided"
        ):
            return
        count = min(plan.latency, plan.latency_max - measured)
        log.info("p50 / floor %s, HTTP gap %s: undecided, %d more requests", interval, gap, count)
        more = await run_latency(modes, clips, count=count, start=plan.warmup + measured)
        for name, section in more.items():
            latency[name].merge(section)


async def _more_gap_pairs(
    latency: dict[str, Section], service: Any, inproc: Any, clips: list[Any], plan: Plan
) -> list[tuple[float, float]]:
    """(HTTP, in-process) pairs beyond the interleaved requests, while HTTP - in-process is still
    undecided after them, up to `plan.gap_max` pairs in all. They skip the floor's
    candidates (~3 s a request on a Zen 3 against ~1 s for a pair) and feed only the gap's target, so
    the service's p50 and its ratios stay those of the requests interleaved with the floor."""
    from bench.report import TARGET_HTTP_GAP_MS
    from bench.verdict import decide, median_paired_difference

    if inproc is service:
        return []
    interleaved = list(zip(latency[service.name].latencies, latency[inproc.name].latencies, strict=False))
    pairs: list[tuple[float, float]] = []
    while (done := len(interleaved) + len(pairs)) < plan.gap_max:
        http, local = zip(*(interleaved + pairs), strict=True)
        if decide(median_paired_difference(http, local)[1], "<=", TARGET_HTTP_GAP_MS) != "undecided":
            break
        count = min(plan.latency, plan.gap_max - done)
        log.info("HTTP - in-process undecided: %d more (HTTP, in-process) pairs", count)
        more = await run_latency([service, inproc], clips, count=count, start=plan.warmup + done)
        pairs += zip(more[service.name].latencies, more[inproc.name].latencies, strict=True)
    return pairs


async def _more_rounds(sections: dict[str, Section], modes: list[Any], clips: list[Any], plan: Plan) -> None:
    """More rounds at 16 conversations (service and naive) while throughput / naive is undecided."""
    from bench.report import TARGET_THROUGHPUT_OVER_NAIVE
    from bench.verdict import decide, rounds_ratio

    service, variants = modes[-1], modes[:-1]
    while (done := len(sections[service.name].rounds_rps)) < plan.rounds_max:
        best = _best_variant({v.name: sections[v.name] for v in variants})
        interval = rounds_ratio(sections[service.name].rounds_rps, sections[best].rounds_rps)
        if decide(interval, ">=", TARGET_THROUGHPUT_OVER_NAIVE) != "undecided":
            return
        log.info("throughput / naive undecided (interval %s): one more round", interval)
        more = await run_concurrency(modes, clips, TARGET_LEVEL, plan, rounds=1, start=done)
        for name, section in more.items():
            sections[name].merge(section)


def _best_variant(variants: dict[str, Section]) -> str:
    """The naive variant with the highest throughput over all its rounds."""
    return max(variants, key=lambda name: len(variants[name].latencies) / (variants[name].wall_s or math.inf))


def _figures(by_mode: dict[str, Section], variants: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Figures per mode; under load the naive variants (name -> torch threads per request thread) fold
    into one `naive`: the fastest, with every variant's throughput beside it."""
    present = {name: by_mode[name] for name in variants if name in by_mode}
    out = {name: s.figures() for name, s in by_mode.items() if name not in present}
    if present:
        best = _best_variant(present)
        out["naive"] = {
            **present[best].figures(),
            "variant": best,
            "torch_threads": variants[best],
            "throughput_rps_by_variant": {name: s.figures()["throughput_rps"] for name, s in present.items()},
        }
    return out
