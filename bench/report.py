"""The JSON report, the targets of the issue with their verdicts, and the table printed for people.

Top-level figures (all ms unless named otherwise):

    p50_ms, p95_ms, p99_ms       the service at concurrency 1, over HTTP (in-process with --no-http)
    inprocess_p50_ms             the same requests through `Engine.submit`, no HTTP
    naive_p50_ms                 funasr generate + transformers forward + LPGNet, per request
    floor_p50_ms                 the encoder floor: per served encoder the fastest counted candidate's
                                 batch-1 p50 (floor_text_/floor_audio_p50_ms), summed (`bench.floor`)
    floor_candidates             every candidate measured: encoder, name, p50, cosine to fp32, whether
                                 it counts (parity), is the best, is what the service runs
    floor_served_p50_ms          the served encoders as the service runs them (the floor before #12)
    throughput_rps_16            the service with 16 concurrent conversations, requests per second
    naive_throughput_rps_16      the naive baseline at 16 (thread per request), at its best torch thread
                                 count per request thread (naive_threads_16 says which)
    naive_serial_throughput_rps  the naive baseline one request at a time (concurrency 1)
    overhead_p50_ms_ctx64        store + LPGNet per request with 64 utterances of context
    lpgnet_forward_(cpu_)p50_ms_ctx64  LPGNet alone on a 64-utterance window, wall (CPU) time
    offline_p50_ms               the default checkpoint, offline profile (MiniLM + prosody-8), one request
    flat_cost_ratio              offline request CPU time p50 at utterance ~200 over that at ~20
    flat_cost_wall_ratio         the same for wall latency (noisier on a shared machine)
    time_to_ready_s              start of the uvicorn process to GET /ready answering 200 (the bench
                                 loads its own models meanwhile, on the same cores)
    peak_rss_mb                  peak resident memory of the service process (VmHWM)
    others_cpu_pct               share of the machine's CPU other processes used during the run
    verdict                      pass / fail / undecided over the four targets (`bench.verdict`)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from bench.stats import ratio, summarize
from bench.verdict import (
    median_interval,
    median_paired_difference,
    overall,
    p50_over_floor,
    paired_median_difference,
    paired_median_ratio,
    rounds_ratio,
    target,
)

TARGET_P50_OVER_FLOOR = 1.10  # issue 12: HTTP p50 at c = 1 <= 1.10 x the honest floor
TARGET_THROUGHPUT_OVER_NAIVE = 1.5
TARGET_OVERHEAD_MS = 5.0
TARGET_P50_OVER_NAIVE = 1.0  # and no slower than the naive baseline at c = 1
TARGET_HTTP_GAP_MS = 15.0  # what HTTP adds to a request at c = 1: median of the per-request differences
TARGET_FLAT_RATIO = 1.15  # "equal" within the noise of a shared machine


def build_report(
    *,
    opts: Any,
    plan: Any,
    facts: dict[str, Any],
    settings: dict[str, Any],
    latency: dict[str, dict[str, Any]],
    floor: dict[str, Any],
    levels: dict[int, dict[str, dict[str, Any]]],
    engine_timings: list[dict[str, float]],
    overhead: dict[str, Any],
    offline: dict[str, Any],
    samples: dict[str, Any],
    time_to_ready_s: float | None,
    server_rss_mb: float | None,
    bench_rss_mb: float,
    starts: dict[str, dict[str, Any]] | None = None,
    others_cpu_pct: float | None,
    elapsed_s: float,
    date: str,
) -> dict[str, Any]:
    """The report. `floor`: `bench.floor.floor_figures`; `samples`: what the intervals are drawn from
    (service_c1, floor_parts, floor_accepted, rounds_16, overhead_ms, flat_cpu_ms; see `_targets`);
    `starts`: profile -> time to ready and RSS of a service process of that profile."""
    service = "http" if "http" in latency else "inproc"
    latency = {"floor": dict(summarize(floor["series"])), **latency}
    top = levels.get(16, {})
    naive_serial = latency["naive"].get("throughput_rps")
    naive_16 = top.get("naive", {}).get("throughput_rps")
    # The baseline at its best: a naive server could also serialise requests and keep its c=1 rate.
    naive_best_16 = max(v for v in (naive_16, naive_serial) if v is not None) if top else None
    service_16 = top.get(service, {}).get("throughput_rps")
    p50 = latency[service].get("p50_ms")
    floor_p50 = floor["floor_p50_ms"]
    stages = sorted({k for t in engine_timings for k in t})
    targets = _targets(samples, service, top)

    report: dict[str, Any] = {
        "date": date,
        "run": opts.kind,
        "backend": opts.backend,
        "device": f"{facts['cpu']}{_identity(facts.get('cpu_identity'))}, {facts['cores']} cores, cpu",
        "service_torch_threads": facts.get("service_torch_threads"),
        "naive_torch_threads": facts["torch_threads"],
        "service_mode": service,
        "verdict": overall(targets),
        "p50_ms": p50,
        "p95_ms": latency[service].get("p95_ms"),
        "p99_ms": latency[service].get("p99_ms"),
        "inprocess_p50_ms": latency["inproc"].get("p50_ms"),
        "naive_p50_ms": latency["naive"].get("p50_ms"),
        "floor_p50_ms": floor_p50,
        "floor_text_p50_ms": floor["by_encoder_p50_ms"].get("text"),
        "floor_audio_p50_ms": floor["by_encoder_p50_ms"].get("audio"),
        "floor_served_p50_ms": floor["served_p50_ms"],
        "floor_candidates": floor["candidates"],
        "throughput_rps_16": service_16,
        "naive_throughput_rps_16": naive_16,
        "naive_threads_16": top.get("naive", {}).get("torch_threads"),
        "naive_serial_throughput_rps": naive_serial,
        "overhead_p50_ms_ctx64": overhead["overhead"].get("p50_ms"),
        "lpgnet_forward_p50_ms_ctx64": overhead.get("lpgnet_forward", {}).get("wall", {}).get("p50_ms"),
        "lpgnet_forward_cpu_p50_ms_ctx64": overhead.get("lpgnet_forward", {}).get("cpu", {}).get("p50_ms"),
        "offline_p50_ms": offline["latency"].get("p50_ms"),
        "flat_cost_ratio": offline.get("cpu_ratio_late_over_early_p50"),
        "flat_cost_wall_ratio": offline.get("ratio_late_over_early_p50"),
        "time_to_ready_s": time_to_ready_s,
        "time_to_ready_by_profile": starts or {},
        "peak_rss_mb": server_rss_mb if server_rss_mb is not None else bench_rss_mb,
        "bench_peak_rss_mb": bench_rss_mb,
        "others_cpu_pct": others_cpu_pct,
        "elapsed_s": round(elapsed_s, 1),
        "ratios": {
            "service_over_floor_p50": ratio(p50, floor_p50),
            "service_over_served_floor_p50": ratio(p50, floor["served_p50_ms"]),
            "inprocess_over_floor_p50": ratio(latency["inproc"].get("p50_ms"), floor_p50),
            "service_over_naive_p50": ratio(p50, latency["naive"].get("p50_ms")),
            "throughput_over_naive_16": ratio(service_16, naive_16),
            # stricter: against the naive baseline at its best (serialising requests, if that is faster)
            "throughput_over_best_naive_16": ratio(service_16, naive_best_16),
            # CPU spent per request, naive over service: the throughput ratio on a machine of our own
            # (thread-per-request also wins the naive baseline CPU from other processes on a shared one)
            "cpu_cost_naive_over_service_16": ratio(
                top.get("naive", {}).get("cpu_ms_per_request"), top.get(service, {}).get("cpu_ms_per_request")
            ),
        },
        "targets": targets,
        "latency": latency,
        "floor": {k: v for k, v in floor.items() if k not in ("series", "candidates")},
        "engine_stages_c1": {s: summarize([t[s] for t in engine_timings if s in t]) for s in stages},
        "concurrency": {str(level): by_mode for level, by_mode in sorted(levels.items())},
        "overhead": overhead,
        "offline": offline,
        "machine": facts,
        "settings": {k: v for k, v in settings.items() if v is not None},
        "plan": asdict(plan),
    }
    return report


def _targets(samples: dict[str, Any], service: str, top: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, each with its figure, 95 % interval and verdict (`bench.verdict`).

    samples: service_c1 (ms), naive_c1 and inproc_c1 (ms, absent: no such target) and floor_parts
    (candidate -> ms) of the same interleaved requests, with
    floor_accepted (the counted candidates per encoder); rounds_16 (mode -> req/s per round at 16);
    overhead_ms; flat_cpu_ms (early, late) CPU ms of interleaved pairs.
    """
    p50_value, p50_interval = p50_over_floor(
        samples["service_c1"], samples["floor_parts"], samples["floor_accepted"]
    )
    rounds = samples["rounds_16"]
    naive = top.get("naive", {}).get("variant")
    early, late = samples["flat_cpu_ms"]
    overhead = samples["overhead_ms"]
    service_c1, naive_c1 = samples["service_c1"], samples.get("naive_c1") or []
    inproc_c1 = samples.get("inproc_c1") or []
    found = {
        "p50_over_floor": target(
            p50_value, p50_interval, "<=", TARGET_P50_OVER_FLOOR, "bootstrap over interleaved requests"
        ),
        "p50_over_naive": target(
            ratio(_median(service_c1), _median(naive_c1)),
            paired_median_ratio(service_c1, naive_c1) if naive_c1 else None,
            "<=",
            TARGET_P50_OVER_NAIVE,
            "bootstrap over interleaved requests",
        ),
        "throughput_16_over_naive": target(
            ratio(top.get(service, {}).get("throughput_rps"), top.get("naive", {}).get("throughput_rps")),
            rounds_ratio(rounds.get(service, []), rounds.get(naive, [])) if naive else None,
            ">=",
            TARGET_THROUGHPUT_OVER_NAIVE,
            "t over per-round ratios",
        ),
        "overhead_p50_ms_ctx64": target(
            round(float(np.median(overhead)), 3) if overhead else None,
            median_interval(overhead),
            "<=",
            TARGET_OVERHEAD_MS,
            "bootstrap of the median",
        ),
        "flat_cost_ratio": target(
            ratio(float(np.median(late)), float(np.median(early))) if early and late else None,
            paired_median_ratio(late, early),
            "<=",
            TARGET_FLAT_RATIO,
            "bootstrap over interleaved pairs",
        ),
    }
    if service == "http" and inproc_c1:  # what HTTP adds to Engine.submit, same interleaved requests
        n = min(len(service_c1), len(inproc_c1))
        extra = samples.get("gap_pairs") or []  # more pairs while this figure was still undecided
        gap, interval = median_paired_difference(
            [*service_c1[:n], *(h for h, _ in extra)], [*inproc_c1[:n], *(i for _, i in extra)]
        )
        found["http_minus_inproc_ms"] = target(
            gap, interval, "<=", TARGET_HTTP_GAP_MS, "bootstrap of the median per-request difference"
        )
        found["http_minus_inproc_ms"]["pairs"] = n + len(extra)
        service_p50, inproc_p50 = _median(service_c1), _median(inproc_c1)
        if service_p50 is not None and inproc_p50 is not None:  # the plain gap of the p50s, beside it
            found["http_minus_inproc_ms"]["p50_gap_ms"] = round(service_p50 - inproc_p50, 3)
            found["http_minus_inproc_ms"]["p50_gap_interval"] = paired_median_difference(
                service_c1, inproc_c1
            )
    return found


def _median(samples: list[float]) -> float | None:
    return float(np.median(samples)) if len(samples) else None


def _identity(identity: dict[str, Any] | None) -> str:
    """Which CPU of a name the run had and what it computes with, as ' (family 25 model 1: avx2)'."""
    if not identity:
        return ""
    features = ", ".join(identity.get("features") or ["no AVX2"])
    return f" (family {identity.get('family')} model {identity.get('model')}: {features})"


def format_table(report: dict[str, Any]) -> str:
    """The figures and targets as plain text, one screen."""
    lines = [
        f"lpgnet bench ({report['run']}, backend {report['backend']}) {report['date']}",
        f"device: {report['device']}; other processes used {report['others_cpu_pct']}% of the CPU",
        "",
        f"{'concurrency 1':<28}{'p50':>10}{'p95':>10}{'p99':>10}{'n':>6}",
    ]
    for name, label in (
        ("floor", "encoder floor"),
        ("naive", "naive baseline"),
        ("inproc", "service in-process"),
        ("http", "service over HTTP"),
    ):
        fig = report["latency"].get(name)
        if fig:
            lines.append(
                f"{label:<28}{_ms(fig.get('p50_ms')):>10}{_ms(fig.get('p95_ms')):>10}"
                f"{_ms(fig.get('p99_ms')):>10}{fig.get('n', 0):>6}"
            )
    lines += ["", f"{'floor candidates (batch 1)':<28}{'p50':>10}{'cos to fp32':>14}"]
    for row in report["floor_candidates"]:
        notes = [n for n, on in (("best", row["best"]), ("served", row["served"])) if on]
        notes += [] if row["accepted"] else [f"rejected: < {row['parity_bound']}"]
        lines.append(
            f"  {row['encoder'] + ' ' + row['name']:<26}{_ms(row.get('p50_ms')):>10}"
            f"{_cos(row['cosine_min']):>14}  {', '.join(notes)}"
        )
    lines += [
        f"floor: {_ms(report['floor_p50_ms'])} ms; as served {_ms(report['floor_served_p50_ms'])} ms",
        "",
        f"{'throughput (req/s)':<28}" + "".join(f"{'c=' + c:>10}" for c in report["concurrency"]),
    ]
    for name, label in (
        ("naive", "naive baseline"),
        ("inproc", "service in-process"),
        ("http", "service over HTTP"),
    ):
        row = [report["concurrency"][c].get(name, {}).get("throughput_rps") for c in report["concurrency"]]
        if any(v is not None for v in row):
            lines.append(f"{label:<28}" + "".join(f"{_num(v):>10}" for v in row))
    lines += [
        "",
        f"{'p50 / p99 under load (ms)':<28}" + "".join(f"{'c=' + c:>16}" for c in report["concurrency"]),
    ]
    for name, label in (
        ("naive", "naive baseline"),
        ("inproc", "service in-process"),
        ("http", "service over HTTP"),
    ):
        cells = []
        for c in report["concurrency"]:
            fig = report["concurrency"][c].get(name, {})
            cells.append(f"{_ms(fig.get('p50_ms'))}/{_ms(fig.get('p99_ms'))}" if fig else "-")
        lines.append(f"{label:<28}" + "".join(f"{cell:>16}" for cell in cells))
    lines += [
        "",
        f"overhead (store + LPGNet) at 64 context: p50 {_ms(report['overhead_p50_ms_ctx64'])} ms "
        f"(LPGNet alone {_ms(report['lpgnet_forward_p50_ms_ctx64'])} ms wall, "
        f"{_ms(report['lpgnet_forward_cpu_p50_ms_ctx64'])} ms CPU)",
        f"offline profile single request: p50 {_ms(report['offline_p50_ms'])} ms; "
        f"utterance ~200 / ~20: CPU {_num(report['flat_cost_ratio'])}, "
        f"wall {_num(report['flat_cost_wall_ratio'])}",
        f"peak RSS: service {_num(report['peak_rss_mb'])} MB, "
        f"bench process {_num(report['bench_peak_rss_mb'])} MB",
        "",
        f"naive baseline at 16: best with {report['naive_threads_16']} torch threads per request thread "
        f"of {report['concurrency'].get('16', {}).get('naive', {}).get('throughput_rps_by_variant')}",
        f"time to ready: {_num(report['time_to_ready_s'])} s; by profile: "
        + (
            "; ".join(
                f"{name} {_num(start['time_to_ready_s'])} s, RSS {_num(start['rss_mb'])} MB"
                f"{'' if start['alone'] else ' (bench loading at once)'}"
                for name, start in report.get("time_to_ready_by_profile", {}).items()
            )
            or "-"
        ),
        "",
        "ratios: " + ", ".join(f"{k} {_num(v)}" for k, v in report["ratios"].items()),
        f"targets (95 % interval): {report['verdict'].upper()}",
    ]
    for name, t in report["targets"].items():
        interval = "-" if t["ci95"] is None else f"[{_num(t['ci95'][0])}, {_num(t['ci95'][1])}]"
        lines.append(
            f"  {name:<28}{_num(t['value']):>10} {interval:>18}  {t['target']:<8} {t['verdict'].upper()}"
        )
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _cos(v: float | None) -> str:
    return "-" if v is None else f"{v:.5f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
