"""Prometheus metrics of one app instance, in its own registry (tests build many apps per process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# The stages the engine times, in order: its timing keys, this histogram's labels and the fields of the
# response's `app.schemas.Timings` (tests/test_engine.py checks that they agree).
STAGES = ("decode", "encode_text", "encode_audio", "store", "model", "total")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONVERSATION_GAUGES = ("lpgnet_active_conversations", "lpgnet_evicted_conversations", "lpgnet_store_bytes")
EVICTION_BOUNDS = ("conversations", "bytes")  # the in-memory store's two LRU bounds: eviction labels


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lpgnet_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "lpgnet_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "lpgnet_stage_duration_seconds",
            "Latency of each stage of scoring an utterance.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lpgnet_batch_size",
            "Items per micro-batch, by batcher (text, audio, model).",
            ["batcher"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "lpgnet_predictions",
            "Utterances scored, by predicted emotion.",
            ["emotion"],
            registry=self.registry,
        )
        self.active_conversations = Gauge(
            "lpgnet_active_conversations",
            "Conversations touched within the session TTL (set when scraped).",
            registry=self.registry,
        )
        self.evicted_conversations = Gauge(
            "lpgnet_evicted_conversations",
            "Conversations the in-memory store dropped before their TTL to keep a bound, since start, by "
            "bound: max_conversations or max_store_bytes (set when scraped).",
            ["bound"],
            registry=self.registry,
        )
        for bound in EVICTION_BOUNDS:  # both series from the start, at 0
            self.evicted_conversations.labels(bound)
        self.store_bytes = Gauge(
            "lpgnet_store_bytes",
            "Bytes the in-memory store holds, estimated on the high side; bounded by max_store_bytes "
            "(0 with Redis; set when scraped).",
            registry=self.registry,
        )
        # process_resident_memory_bytes and friends: the memory the bounds above are meant to cap
        ProcessCollector(registry=self.registry)
        self.ready = Gauge(
            "lpgnet_ready", "1 once the model is loaded and warmed up.", registry=self.registry
        )

    def observe_store(self, *, evicted: int, evicted_for_bytes: int, bytes_held: int) -> None:
        """The store's counts since start, as the store keeps them (`ConversationStore`)."""
        by_count, by_bytes = EVICTION_BOUNDS
        self.evicted_conversations.labels(by_count).set(evicted - evicted_for_bytes)
        self.evicted_conversations.labels(by_bytes).set(evicted_for_bytes)
        self.store_bytes.set(bytes_held)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def batch_observer(self, batcher: str) -> Callable[[float], None]:
        return self.batch_size.labels(batcher).observe

    def render(self, *, conversation_counts: bool = True) -> bytes:
        """The exposition text; without the conversation gauges where a tenant's key reads it (they
        count every tenant's conversations)."""
        if conversation_counts:
            return generate_latest(self.registry)
        names = {sample.name for metric in self.registry.collect() for sample in metric.samples}
        return generate_latest(self.registry.restricted_registry(names - set(CONVERSATION_GAUGES)))
