"""One benchmark run: every figure measured in the same process lifetime, side by side, interleaved.

Sections, in order (all on one event loop; blocking model work runs in threads):

    setup        production-size random encoders and matching checkpoints (cached), the uvicorn
                 service started in its own process, the in-process engine and the naive pipeline
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
import contextlib
import datetime as dt
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.models import DEFAULT_CACHE, REPO_ROOT, write_base_encoders, write_checkpoint, write_once
from bench.stats import CpuShare, Stopwatch, machine_facts, peak_rss_mb, ratio, summarize
from bench.workload import Clip, clip_for, load_clips

log = logging.getLogger("bench")

DEFAULT_OUT = REPO_ROOT / ".cache" / "bench" / "report.json"
CONTEXT_WINDOW = 64  # K of the overhead target ("64 utterances of context")
DEFAULT_HIDDEN = 128  # D that `lpgnet train` gives a checkpoint by default (model.train.TrainConfig)
Backend = Literal["torch", "onnx"]
RunKind = Literal["smoke", "quick", "full"]


@dataclass(frozen=True)
class Plan:
    """How many requests each section sends (per mode)."""

    latency: int  # concurrency-1 requests per mode, after `warmup`
    requests: int  # per mode and concurrency level (rounded up to whole turns of every conversation)
    rounds: int  # the concurrency blocks are repeated this many times, modes alternating
    warmup: int
    overhead: int
    flat: int  # offline requests at utterance ~20 and again at ~200
    flat_prefill: Literal["requests", "store"]  # how conversation B reaches utterance 190
    inproc_under_load: bool = True  # False: the in-process engine is measured at concurrency 1 only

    @classmethod
    def for_kind(cls, kind: RunKind, requests: int | None = None) -> Plan:
        plans = {
            "smoke": cls(latency=3, requests=4, rounds=1, warmup=1, overhead=3, flat=3, flat_prefill="store"),
            "quick": cls(
                latency=4,
                requests=4,
                rounds=1,
                warmup=1,
                overhead=8,
                flat=8,
                flat_prefill="store",
                inproc_under_load=False,  # keeps --quick under two minutes; HTTP is the service as deployed
            ),
            "full": cls(
                latency=20, requests=48, rounds=2, warmup=2, overhead=30, flat=30, flat_prefill="requests"
            ),
        }
        plan = plans[kind]
        if requests is not None:
            plan = cls(**{**asdict(plan), "latency": requests, "requests": requests})
        return plan


@dataclass(frozen=True)
class BenchOptions:
    kind: RunKind = "full"
    backend: Backend = "torch"
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int | None = None
    threads: int | None = None  # torch intra-op threads everywhere (None: torch's default)
    http: bool = True
    batch_max_size: int | None = None  # service micro-batching (None: the service's default)
    batch_max_wait_ms: float | None = None
    hidden: int = DEFAULT_HIDDEN  # D of the random production checkpoint
    cache: Path = DEFAULT_CACHE
    out: Path = DEFAULT_OUT

    @property
    def plan(self) -> Plan:
        return Plan.for_kind(self.kind, self.requests)


@dataclass(frozen=True)
class Served:
    """A checkpoint and the encoder profile (with local model directories) that serve it."""

    profile: str
    overrides: dict[str, str]  # text_model / audio_model / tiny_dir
    checkpoint: Path
    onnx_model: Path | None = None  # backend onnx: an `lpgnet export` bundle (network + encoder graphs)


@dataclass
class Section:
    """Latencies and accounting of one mode within one section."""

    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rounds_rps: list[float] = field(default_factory=list)
    batch: dict[str, list[float]] = field(default_factory=dict)  # batcher -> [items, batches]

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


# ---- setup ----------------------------------------------------------------------------------------


def prepare_served(opts: BenchOptions) -> tuple[Served, Served]:
    """The served model (production-size, or tiny for smoke) and the offline-profile model."""
    cache = opts.cache
    if opts.kind == "smoke":
        from model.encoders.tiny import write_tiny_encoders

        tiny = cache / "tiny"
        write_tiny_encoders(tiny)
        main = _served(
            "tiny", {"tiny_dir": str(tiny)}, cache / "checkpoints" / "tiny.pt", hidden=16, opts=opts
        )
    else:
        text, audio = write_base_encoders(cache)
        overrides = {"text_model": str(text), "audio_model": str(audio)}
        main = _served(
            "production",
            overrides,
            cache / "checkpoints" / f"production-d{opts.hidden}.pt",
            hidden=opts.hidden,
            opts=opts,
        )
    from model.checkpoint import DEFAULT_CHECKPOINT

    if DEFAULT_CHECKPOINT.is_file():  # the embedded default, when the repository ships it
        offline = Served("offline", {}, DEFAULT_CHECKPOINT)
    else:
        offline = _served("offline", {}, cache / "checkpoints" / "offline.pt", hidden=128, opts=opts)
    return main, offline


def _served(
    profile: str, overrides: dict[str, str], path: Path, *, hidden: int, opts: BenchOptions
) -> Served:
    specs = _cached_specs(profile, overrides, opts.cache)
    write_checkpoint(path, specs, profile, hidden=hidden, onnx=opts.backend == "onnx")
    bundle = _onnx_bundle(path, overrides, opts.cache) if opts.backend == "onnx" else None
    return Served(profile, overrides, path, bundle)


def _onnx_bundle(checkpoint: Path, overrides: dict[str, str], cache: Path) -> Path | None:
    """The checkpoint's `lpgnet export` bundle, written once per checkpoint version.

    None where `model.export` cannot write one: then only LPGNet runs in onnxruntime (from the .onnx
    beside the checkpoint) and the encoders stay in PyTorch.
    """
    from model import export
    from model.checkpoint import load_checkpoint

    export_bundle = getattr(export, "export_bundle", None)
    manifest = getattr(export, "MANIFEST", None)
    if export_bundle is None or manifest is None:
        return None
    target = cache / "bundles" / f"{checkpoint.stem}-{load_checkpoint(checkpoint).version}"
    if not (target / manifest).is_file():
        log.info("exporting the ONNX bundle of %s (once)", checkpoint.name)
    return write_once(target, manifest, lambda out: export_bundle(checkpoint, out, **overrides))


def _cached_specs(
    profile: str, overrides: dict[str, str], cache: Path, *, refresh: bool = False
) -> dict[str, Any]:
    """The encoder specs of a profile; building encoders to learn them costs seconds, so they are cached."""
    from model.encoders.base import EncoderSpec
    from model.encoders.identity import short_hash
    from model.encoders.profiles import profile_specs

    stamps = {k: Path(v).stat().st_mtime_ns for k, v in overrides.items() if Path(v).exists()}
    path = cache / "specs" / f"{profile}-{short_hash({'overrides': overrides, 'stamps': stamps})}.json"
    if path.is_file() and not refresh:
        return {m: EncoderSpec.from_dict(d) for m, d in json.loads(path.read_text()).items()}
    specs = profile_specs(profile, device="cpu", **overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({m: s.to_dict() for m, s in specs.items()}, indent=2))
    return specs


def service_settings(served: Served, opts: BenchOptions) -> dict[str, Any]:
    """The service's configuration, as Settings field names (LPGNET_<NAME> for the process)."""
    settings: dict[str, Any] = {
        "checkpoint": str(served.checkpoint),
        "profile": served.profile,
        **served.overrides,
        "backend": opts.backend,
        "device": "cpu",
        "torch_threads": opts.threads,
        "context_window": CONTEXT_WINDOW,
        "log_level": "warning",
    }
    if served.onnx_model is not None:
        settings["onnx_model"] = str(served.onnx_model)
        if "onnx_threads" in _settings_fields():
            settings["onnx_threads"] = opts.threads
    if opts.batch_max_size is not None:
        settings["batch_max_size"] = opts.batch_max_size
    if opts.batch_max_wait_ms is not None:
        settings["batch_max_wait_ms"] = opts.batch_max_wait_ms
    return settings


def _settings_fields() -> set[str]:
    from app.settings import Settings

    return set(Settings.model_fields)


def _settings(values: dict[str, Any]) -> Any:
    """`app.settings.Settings` from these values only (the bench's own LPGNET_* env is not read)."""
    from app.settings import Settings

    class BenchSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: Any, init_settings: Any, *args: Any, **kwargs: Any
        ) -> Any:
            return (init_settings,)

    return BenchSettings(**{k: v for k, v in values.items() if v is not None})


async def load_engine(served: Served, opts: BenchOptions) -> Any:
    """`Engine.load` + start + warm-up, exactly as the app's lifespan does it."""
    from app.engine import Engine, StartupError
    from app.metrics import Metrics
    from app.store import build_store

    values = service_settings(served, opts)
    graph = served.onnx_model or served.checkpoint.with_suffix(".onnx")
    if opts.backend == "onnx" and not graph.exists():
        values["backend"] = "torch"  # a shipped checkpoint without its ONNX graph
    settings = _settings(values)
    store = build_store(settings)
    try:
        engine = await asyncio.to_thread(Engine.load, settings, store, Metrics())
    except StartupError as exc:
        if "does not match" not in str(exc) or not served.checkpoint.is_relative_to(opts.cache):
            raise  # never rewrite a checkpoint the bench did not write
        # the cached specs are stale (the encoders' identity changed): learn them again and retry
        log.info("encoder specs changed; rewriting %s", served.checkpoint.name)
        await asyncio.to_thread(_refresh_checkpoint, served, opts)
        engine = await asyncio.to_thread(Engine.load, settings, store, Metrics())
    engine.start()
    await engine.warm_up()
    return engine


def _refresh_checkpoint(served: Served, opts: BenchOptions) -> None:
    from model.checkpoint import load_checkpoint

    specs = _cached_specs(served.profile, served.overrides, opts.cache, refresh=True)
    hidden = load_checkpoint(served.checkpoint).config.hidden
    write_checkpoint(served.checkpoint, specs, served.profile, hidden=hidden, onnx=opts.backend == "onnx")


async def close_engine(engine: Any) -> None:
    await engine.close()
    await engine.store.close()


def floor_encoders(engine: Any, opts: BenchOptions, threads: int) -> dict[str, Any]:
    """The encoders on the chosen backend: the engine's own, or ONNX exports of them."""
    encoders = dict(engine.encoders)
    if opts.backend == "torch" or all(type(e).__name__.startswith("Onnx") for e in encoders.values()):
        return encoders
    from bench.models import export_onnx_encoders
    from model.encoders.onnx import OnnxEmotion2VecEncoder, OnnxTextEncoder

    dirs = export_onnx_encoders(encoders, opts.cache)
    return {
        "text": OnnxTextEncoder(dirs["text"], device="cpu", intra_op_threads=threads),
        "audio": OnnxEmotion2VecEncoder(dirs["audio"], device="cpu", intra_op_threads=threads),
    }


# ---- sections -------------------------------------------------------------------------------------


def _rotate(items: Sequence[Any], by: int) -> list[Any]:
    k = by % len(items)
    return list(items[k:]) + list(items[:k])


async def run_latency(modes: Sequence[Any], clips: list[Clip], plan: Plan) -> dict[str, Section]:
    """Concurrency 1, interleaved request by request; each mode has one conversation."""
    sections = {m.name: Section() for m in modes}
    tag = uuid.uuid4().hex[:6]
    for i in range(plan.warmup + plan.latency):
        clip = clip_for(clips, 0, i)
        for mode in _rotate(modes, i):
            with Stopwatch(mode.pids) as watch:
                latency = await mode.request(f"lat-{tag}-{mode.name}", clip)
            if i >= plan.warmup:
                section = sections[mode.name]
                section.latencies.append(latency)
                section.wall_s += watch.wall_s
                section.cpu_s += watch.cpu_s
    return sections


async def run_concurrency(
    modes: Sequence[Any], clips: list[Clip], level: int, plan: Plan
) -> dict[str, Section]:
    """`level` conversations at once, closed loop; modes alternate block by block, `plan.rounds` times."""
    turns = max(1, math.ceil(plan.requests / (level * plan.rounds)))
    sections = {m.name: Section() for m in modes}
    for r in range(plan.rounds):
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
        audio = rng.standard_normal(cfg.audio_dim).astype(np.float16) if "audio" in engine.encoders else None
        await engine.store.append(key, NewUtterance(meta, text, audio))


async def run_overhead(engine: Any, clips: list[Clip], plan: Plan) -> dict[str, Any]:
    """Store + LPGNet per request at K=64 context: text-only requests into a 64-utterance conversation."""
    from app.engine import UtteranceRequest
    from app.store import ConversationKey

    key = ConversationKey("", f"overhead-{uuid.uuid4().hex[:6]}")
    await prefill(engine, key, CONTEXT_WINDOW)
    store_ms, model_ms, overhead_ms, contexts = [], [], [], set()
    for i in range(plan.warmup + plan.overhead):
        scored = await engine.submit(UtteranceRequest(key=key, transcript=clips[i % len(clips)].transcript))
        timings = scored.prediction["timings_ms"]
        contexts.add(scored.prediction["context_size"])
        if i >= plan.warmup:
            store_ms.append(timings["store"])
            model_ms.append(timings["model"])
            overhead_ms.append(timings["store"] + timings["model"])
    return {
        "context_size": sorted(contexts),
        "overhead": summarize(overhead_ms),
        "lpgnet_forward": await asyncio.to_thread(_time_network, engine, plan.overhead),
        "store": summarize(store_ms),
        "model": summarize(model_ms),
    }


def _time_network(engine: Any, repeats: int) -> dict[str, Any]:
    """LPGNet alone on one 64-utterance window, wall and CPU time, on the engine's backend."""
    import torch

    cfg = engine.checkpoint.config
    rng = np.random.default_rng(0)
    text = rng.standard_normal((1, CONTEXT_WINDOW, cfg.text_dim)).astype(np.float32)
    audio = rng.standard_normal((1, CONTEXT_WINDOW, cfg.audio_dim)).astype(np.float32)
    mask = np.ones((1, CONTEXT_WINDOW), dtype=bool)
    if engine.settings.backend == "onnx":
        from model.export import OnnxLPGNet

        graph = Path(engine.settings.onnx_model or Path(engine.settings.checkpoint).with_suffix(".onnx"))
        if graph.is_dir():  # an `lpgnet export` bundle
            from model.export import LPGNET_GRAPH

            graph = graph / LPGNET_GRAPH
        threads = getattr(engine.settings, "onnx_threads", None)
        runner = OnnxLPGNet(graph, device="cpu", **({"intra_op_threads": threads} if threads else {}))

        def forward() -> None:
            runner(text, audio, mask, mask)
    else:
        module = engine.checkpoint.model.eval()
        inputs = [torch.from_numpy(x) for x in (text, audio, mask, mask)]

        def forward() -> None:
            with torch.inference_mode():
                module(*inputs)

    forward()
    wall, cpu = [], []
    for _ in range(max(repeats, 10)):
        with Stopwatch() as watch:
            forward()
        wall.append(watch.wall_s * 1000.0)
        cpu.append(watch.cpu_s * 1000.0)
    return {"backend": engine.settings.backend, "wall": summarize(wall), "cpu": summarize(cpu)}


async def run_offline(engine: Any, clips: list[Clip], plan: Plan) -> dict[str, Any]:
    """Offline profile: requests at utterance ~20 and ~200 of two conversations, alternating.

    Wall latency and this process's CPU time per request are both recorded: on a shared machine the
    CPU time is what tells a real difference in cost from a neighbour's burst of work.
    """
    from app.store import ConversationKey
    from bench.modes import InProcessMode

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
    for i in range(plan.flat):
        for side, cid, turn in _rotate(
            [("early", early, start_early + i), ("late", late, start_late + i)], i
        ):
            with Stopwatch() as watch:
                latency = await mode.request(cid, clip_for(clips, 0, turn))
            timings = mode.timings[-1]
            figures[side]["wall"].append(latency)
            figures[side]["cpu"].append(watch.cpu_s * 1000.0)
            figures[side]["overhead"].append(timings.get("store", 0.0) + timings.get("model", 0.0))
    summary = {side: {k: summarize(v) for k, v in f.items()} for side, f in figures.items()}
    return {
        "profile": "offline",
        "latency": summarize(figures["early"]["wall"] + figures["late"]["wall"]),
        "utterances_early": [start_early, start_early + plan.flat - 1],
        "utterances_late": [start_late, start_late + plan.flat - 1],
        **summary,
        "ratio_late_over_early_p50": ratio(
            summary["late"]["wall"].get("p50_ms"), summary["early"]["wall"].get("p50_ms")
        ),
        "cpu_ratio_late_over_early_p50": ratio(
            summary["late"]["cpu"].get("p50_ms"), summary["early"]["cpu"].get("p50_ms")
        ),
        "prefill": plan.flat_prefill,
    }


# ---- the run --------------------------------------------------------------------------------------


def run_bench(
    quick: bool = False,
    *,
    smoke: bool = False,
    backend: Backend = "torch",
    concurrency: Sequence[int] = (1, 4, 16),
    requests: int | None = None,
    threads: int | None = None,
    http: bool = True,
    batch_max_size: int | None = None,
    batch_max_wait_ms: float | None = None,
    hidden: int = DEFAULT_HIDDEN,
    cache: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write the JSON report to `out` and return it (the `lpgnet bench` entry)."""
    kind: RunKind = "smoke" if smoke else "quick" if quick else "full"
    opts = BenchOptions(
        kind=kind,
        backend=backend,
        concurrency=tuple(sorted(set(concurrency))),
        requests=requests,
        threads=threads,
        http=http,
        batch_max_size=batch_max_size,
        batch_max_wait_ms=batch_max_wait_ms,
        hidden=hidden,
        cache=cache or DEFAULT_CACHE,
        out=out or DEFAULT_OUT,
    )
    report = asyncio.run(_run(opts))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("report written to %s", opts.out)
    return report


async def _run(opts: BenchOptions) -> dict[str, Any]:
    import torch

    from bench.modes import FloorMode, HttpMode, InProcessMode, NaiveMode
    from bench.naive import NaivePipeline
    from bench.report import build_report
    from bench.server import ServiceProcess

    started = time.perf_counter()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    facts = machine_facts(threads)
    cpu_share, own_cpu_at_start = CpuShare(), Stopwatch().cpu_seconds()
    plan = opts.plan
    clips = load_clips()
    log.info("bench %s: backend %s, %d torch threads, plan %s", opts.kind, opts.backend, threads, plan)

    main, offline = await asyncio.to_thread(prepare_served, opts)
    settings = service_settings(main, opts)
    server: ServiceProcess | None = None
    engine = offline_engine = http_mode = naive_mode = None
    own_pids = [os.getpid()]
    try:
        if opts.http:
            server = ServiceProcess(settings, opts.out.parent / "server.log")
            server.start()  # loads while this process loads its own models
            own_pids.append(server.pid)
        log.info("loading the in-process engine and the naive pipeline")
        engine = await load_engine(main, opts)
        text_dir, audio_dir = _encoder_dirs(main)
        naive = await asyncio.to_thread(NaivePipeline.sharing, engine, text_dir, audio_dir, main.checkpoint)
        floor = FloorMode(floor_encoders(engine, opts, threads))
        await asyncio.to_thread(floor.prepare, clips)
        naive_mode, inproc = NaiveMode(naive), InProcessMode(engine)
        modes: list[Any] = [floor, naive_mode, inproc]
        if server is not None:
            await asyncio.to_thread(server.wait_ready)
            http_mode = HttpMode(server.url, server.pid)
            modes.append(http_mode)
        log.info(
            "ready after %.0f s; latency at concurrency 1 (%d requests per mode)",
            time.perf_counter() - started,
            plan.latency,
        )

        latency = await run_latency(modes, clips, plan)
        engine_timings = inproc.timings[plan.warmup :]  # the engine's stages at concurrency 1
        serving = [m for m in modes if m.name != "floor"]
        loaded = [m for m in serving if plan.inproc_under_load or m.name != "inproc" or server is None]
        levels: dict[int, dict[str, Section]] = {}
        for level in opts.concurrency:
            if level == 1:
                levels[1] = {m.name: latency[m.name] for m in serving}
                continue
            log.info("concurrency %d", level)
            levels[level] = await run_concurrency(loaded, clips, level, plan)

        log.info("overhead at %d utterances of context", CONTEXT_WINDOW)
        overhead = await run_overhead(engine, clips, plan)
        server_rss = peak_rss_mb(server.pid) if server is not None else None

        log.info("offline profile (%s)", offline.checkpoint.name)
        offline_engine = await load_engine(offline, opts)
        offline_figures = await run_offline(offline_engine, clips, plan)
        own_cpu = Stopwatch(own_pids).cpu_seconds() - own_cpu_at_start
        return build_report(
            opts=opts,
            plan=plan,
            facts=facts,
            settings=settings,
            latency={name: s.figures() for name, s in latency.items()},
            floor_parts={m: summarize(v) for m, v in floor.parts.items()},
            levels={
                lvl: {name: s.figures() for name, s in by_mode.items()} for lvl, by_mode in levels.items()
            },
            engine_timings=engine_timings,
            overhead=overhead,
            offline=offline_figures,
            server_rss_mb=server_rss,
            bench_rss_mb=peak_rss_mb(),
            others_cpu_pct=cpu_share.others_pct(own_cpu),
            elapsed_s=time.perf_counter() - started,
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    finally:
        if http_mode is not None:
            await http_mode.close()
        if naive_mode is not None:
            naive_mode.close()
        for e in (engine, offline_engine):
            if e is not None:
                with contextlib.suppress(Exception):
                    await close_engine(e)
        if server is not None:
            server.stop()


def _encoder_dirs(served: Served) -> tuple[Path, Path]:
    """The text and audio model directories of the served profile (for the naive pipeline)."""
    if "tiny_dir" in served.overrides:
        from model.encoders.tiny import AUDIO_DIRNAME, TEXT_DIRNAME

        root = Path(served.overrides["tiny_dir"])
        return root / TEXT_DIRNAME, root / AUDIO_DIRNAME
    return Path(served.overrides["text_model"]), Path(served.overrides["audio_model"])
