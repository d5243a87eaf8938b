"""Latency summaries and the machine facts a benchmark figure is meaningless without."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """n, p50/p95/p99 and mean in ms (numpy's linear interpolation; p99 of few samples ~ the max)."""
    if not latencies_ms:
        return {"n": 0}
    x = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "n": int(x.size),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "mean_ms": round(float(x.mean()), 2),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


@dataclass
class Stopwatch:
    """Wall time and CPU time of a set of processes over a block of work."""

    pids: list[int] = field(default_factory=lambda: [os.getpid()])
    _wall: float = 0.0
    _cpu: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), self.cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = self.cpu_seconds() - self._cpu

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the watched processes (threads included).

        This process reads its own clock (nanoseconds); others come from psutil, in clock ticks (10 ms).
        """
        import psutil

        total = 0.0
        for pid in self.pids:
            if pid == os.getpid():
                total += time.process_time()
            else:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total


class CpuShare:
    """How much of the machine's CPU other processes took while the benchmark ran.

    On a shared machine every figure is measured next to someone else's work; this says how much.
    """

    def __init__(self) -> None:
        self._busy, self._total = _proc_stat()

    def others_pct(self, own_cpu_s: float) -> float | None:
        busy, total = _proc_stat()
        if total <= self._total:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        others = (busy - self._busy) / tick - own_cpu_s
        return round(max(0.0, others) / ((total - self._total) / tick) * 100.0, 1)


def _proc_stat() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat (0, 0 where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a process in MiB; this process's ru_maxrss when /proc lacks it."""
    status = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the instruction sets that decide what the encoders serve (`model.encoders.precision`) and how fast
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_identity() -> dict[str, Any]:
    """Family, model and the deciding instruction sets of the first CPU, as /proc/cpuinfo lists them
    (a hypervisor's "AMD EPYC" names a Zen 3 and a Zen 5 alike). Empty where /proc/cpuinfo is missing."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first CPU only
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "features": [f for f in CPU_FEATURES if f in flags],
    }


def machine_facts(torch_threads: int) -> dict[str, Any]:
    """CPU, cores, library versions and the load the machine carried when the run began."""
    import onnxruntime
    import torch
    import transformers

    try:  # not imported: importing funasr prints a notice to stdout
        funasr_version = version("funasr")
    except PackageNotFoundError:  # pragma: no cover - funasr is a dependency
        funasr_version = "unavailable"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "cpu_identity": cpu_identity(),
        "cores": cores,
        "torch_threads": torch_threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
        "funasr": funasr_version,
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }
