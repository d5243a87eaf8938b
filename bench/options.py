"""What one benchmark run is asked to do: its options and how many requests each section sends.

Shared by the orchestration (`bench.runner`), the setup (`bench.serving`) and the measurements
(`bench.sections`), so it depends on none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bench.models import DEFAULT_CACHE
from model.encoders.precision import Precision
from model.paths import cache_root

DEFAULT_OUT = cache_root() / "bench" / "report.json"  # the one cache root, never the checkout
CONTEXT_WINDOW = 64  # K of the overhead target ("64 utterances of context")
DEFAULT_HIDDEN = 128  # D that `lpgnet train` gives a checkpoint by default (model.config.TrainConfig)
Backend = Literal["auto", "torch", "onnx"]  # onnx: the `lpgnet export` bundle (encoders too)
RunKind = Literal["smoke", "quick", "full"]
Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Plan:
    """How many requests each section sends (per mode).

    A figure whose verdict is still undecided after the first requests gets more (`bench.verdict`):
    the concurrency-1 requests (floor, service and, over HTTP, in-process) `latency` at a time up to
    `latency_max` (then, while HTTP - in-process is still undecided, (HTTP, in-process) pairs without
    the floor up to `gap_max` pairs in all), the rounds at 16 conversations one at a time up to
    `rounds_max`, the overhead requests `overhead` at a time up to `overhead_max` and the offline
    pairs `flat` at a time up to `flat_max`.
    """

    latency: int  # concurrency-1 requests per mode, after `warmup`
    requests: int  # per mode and concurrency level (rounded up to whole turns of every conversation)
    rounds: int  # the concurrency blocks are repeated this many times, modes alternating
    warmup: int
    overhead: int
    flat: int  # offline requests at utterance ~20 and again at ~200
    flat_prefill: Literal["requests", "store"]  # how conversation B reaches utterance 190
    inproc_under_load: bool = True  # False: the in-process engine is measured at concurrency 1 only
    latency_max: int = 0  # 0: no more than `latency`
    rounds_max: int = 0  # 0: no more than `rounds`
    overhead_max: int = 0  # 0: no more than `overhead`
    gap_max: int = 0  # (HTTP, in-process) pairs in all while their gap is undecided (0: no more)
    flat_max: int = 0  # 0: no more than `flat`

    @classmethod
    def for_kind(cls, kind: RunKind, requests: int | None = None) -> Plan:
        plans = {
            "smoke": cls(latency=3, requests=4, rounds=1, warmup=1, overhead=3, flat=3, flat_prefill="store"),
            "quick": cls(
                latency=6,
                requests=4,
                rounds=3,  # a throughput interval needs rounds; at 16 conversations a turn each
                warmup=1,
                overhead=20,  # cheap (text only), and a median of 8 under load was too wide to decide
                flat=8,
                flat_prefill="store",
                inproc_under_load=False,  # keeps --quick short; HTTP is the service as deployed
                latency_max=30,
                rounds_max=5,
                overhead_max=60,  # a median near the bound (Zen 3: 4.2-5.0 ms against 5) needs more
                gap_max=60,  # ~1 s a pair on a Zen 3, without the floor's ~3 s
                flat_max=24,  # ~0.3 s a pair
            ),
            "full": cls(
                latency=20,
                requests=48,
                rounds=4,
                warmup=2,
                overhead=30,
                flat=30,
                flat_prefill="requests",
                latency_max=40,
                rounds_max=8,
                overhead_max=90,
                gap_max=80,
                flat_max=60,
            ),
        }
        plan = plans[kind]
        if requests is not None:
            plan = cls(**{**asdict(plan), "latency": requests, "requests": requests})
        return plan


@dataclass(frozen=True)
class BenchOptions:
    """The options of `run_bench`, as one value handed to the setup and every section."""

    kind: RunKind = "full"
    backend: Backend = "auto"  # the service's default
    device: Device = "cpu"  # the service's LPGNET_DEVICE (cuda: `bench.gpu`)
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int | None = None
    threads: int | None = None  # torch intra-op threads, service and naive (None: each one's default)
    precision: Precision | None = None  # service LPGNET_ENCODER_PRECISION (None: the service default)
    workers: int | None = None  # service LPGNET_ENCODER_WORKERS
    http: bool = True
    batch_max_size: int | None = None  # service micro-batching (None: the service's default)
    batch_max_wait_ms: float | None = None
    hidden: int = DEFAULT_HIDDEN  # D of the random production checkpoint
    cache: Path = DEFAULT_CACHE
    out: Path = DEFAULT_OUT

    @classmethod
    def create(
        cls,
        *,
        quick: bool = False,
        smoke: bool = False,
        concurrency: Sequence[int] = (1, 4, 16),
        cache: Path | None = None,
        out: Path | None = None,
        **fields: Any,
    ) -> BenchOptions:
        """The options `run_bench` is called with: `smoke` (else `quick`, else full) picks the kind, the
        concurrency levels are sorted without repeats, None for `cache` / `out` is the default."""
        kind: RunKind = "smoke" if smoke else "quick" if quick else "full"
        return cls(
            kind=kind,
            concurrency=tuple(sorted(set(concurrency))),
            cache=cache or DEFAULT_CACHE,
            out=out or DEFAULT_OUT,
            **fields,
        )

    @property
    def plan(self) -> Plan:
        return Plan.for_kind(self.kind, self.requests)
