"""Verdicts a quick run and a full run agree on: every target's figure with a 95 % confidence interval.

    pass       the whole interval lies on the target's side of its bound
    fail       the whole interval lies on the other side
    undecided  the interval straddles the bound: the run could not tell (a run first sends more
               requests of such a figure, up to its plan's cap: `Plan.latency_max`, `Plan.rounds_max`)

The intervals come from the samples the run measured side by side, so a neighbour's burst of load
widens them instead of flipping the verdict:

    p50 / floor        bootstrap over the interleaved requests at concurrency 1: a resample keeps
                       request i's service latency with the floor candidates' timings of request i,
                       and picks each encoder's fastest candidate again (percentile interval)
    throughput / naive the rounds at 16 conversations pair a service block with the naive blocks run
                       next to it: t-interval of the log of the per-round ratios (two rounds at least)
    overhead           bootstrap of the median over the requests
    HTTP - in-process  bootstrap of the median of the per-request differences (the same clip over
                       HTTP and in process, interleaved: its own cost cancels)
    flat cost          bootstrap over the interleaved (utterance ~20, utterance ~200) pairs, ratio of medians

An interval misses the true value about 5 % of the time, so a quick and a full run on the same machine
can still disagree on a figure that sits near its bound; "undecided" is what makes that rare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

Verdict = Literal["pass", "fail", "undecided"]
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0  # the interval of a given set of samples is the same every time


def _bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int) -> tuple[float, float] | None:
    """Percentile interval of `stat(idx)`, idx (RESAMPLES, n) row-wise resamples of range(n)."""
    if n < 2:
        return None
    idx = np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))
    tail = (1.0 - CONFIDENCE) / 2 * 100.0
    low, high = np.percentile(stat(idx), [tail, 100.0 - tail])
    return round(float(low), 3), round(float(high), 3)


def p50_over_floor(
    service: Sequence[float], parts: Sequence[dict[str, float]], accepted: dict[str, list[str]]
) -> tuple[float | None, tuple[float, float] | None]:
    """Service p50 over the floor (the sum over encoders of the best candidate's p50), and its interval.

    `service[i]` and `parts[i]` (candidate key -> ms) come from the same interleaved request i;
    `accepted` lists, per encoder, the candidate keys that may set the floor.
    """
    n = min(len(service), len(parts))
    if n == 0 or not all(accepted.values()):
        return None, None
    s = np.asarray(service[:n], dtype=np.float64)
    # per encoder, (n, K): request i's ms for each of its K counted candidates
    cand = {m: np.asarray([[p[k] for k in keys] for p in parts[:n]]) for m, keys in accepted.items()}

    def stat(idx: np.ndarray) -> np.ndarray:  # idx (B, n)
        floor = sum(np.median(c[idx], axis=1).min(axis=1) for c in cand.values())  # (B,)
        return np.median(s[idx], axis=1) / floor

    value = float(np.median(s) / sum(np.median(c, axis=0).min() for c in cand.values()))
    return round(value, 3), _bootstrap(stat, n)


def median_interval(samples: Sequence[float]) -> tuple[float, float] | None:
    x = np.asarray(samples, dtype=np.float64)
    return _bootstrap(lambda idx: np.median(x[idx], axis=1), x.size)


def paired_median_ratio(
    numerator: Sequence[float], denominator: Sequence[float]
) -> tuple[float, float] | None:
    """Interval of median(numerator) / median(denominator) over pairs (numerator[i], denominator[i])."""
    n = min(len(numerator), len(denominator))
    a = np.asarray(numerator[:n], dtype=np.float64)
    b = np.asarray(denominator[:n], dtype=np.float64)
    return _bootstrap(lambda idx: np.median(a[idx], axis=1) / np.median(b[idx], axis=1), n)


def paired_median_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """Interval of median(a) - median(b) over pairs (a[i], b[i]) (the same interleaved request i)."""
    n = min(len(a), len(b))
    x = np.asarray(a[:n], dtype=np.float64)
    y = np.asarray(b[:n], dtype=np.float64)
    return _bootstrap(lambda idx: np.median(x[idx], axis=1) - np.median(y[idx], axis=1), n)


def median_paired_difference(
    a: Sequence[float], b: Sequence[float]
) -> tuple[float | None, tuple[float, float] | None]:
    """median(a[i] - b[i]) and its bootstrap interval: what `a` adds to request i of `b`.

    Pair i is the same clip sent both ways within one interleaved turn, so the clip's own cost (3.3 s or
    4.1 s of audio) cancels in each difference; the difference of the two medians keeps it, and its
    interval is as wide as the spread of the clips (+-16 ms around a 7 ms gap in 20 pairs).
    """
    n = min(len(a), len(b))
    if n == 0:
        return None, None
    d = np.asarray(a[:n], dtype=np.float64) - np.asarray(b[:n], dtype=np.float64)
    return round(float(np.median(d)), 3), _bootstrap(lambda idx: np.median(d[idx], axis=1), n)


def rounds_ratio(service_rps: Sequence[float], naive_rps: Sequence[float]) -> tuple[float, float] | None:
    """t-interval of the ratio of throughputs from per-round pairs (geometric mean of the ratios)."""
    n = min(len(service_rps), len(naive_rps))
    if n < 2:
        return None
    from scipy import stats  # librosa, a dependency, requires scipy

    logs = np.log(np.asarray(service_rps[:n], dtype=np.float64) / np.asarray(naive_rps[:n], dtype=np.float64))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(logs.std(ddof=1)) / math.sqrt(n)
    centre = float(logs.mean())
    return round(math.exp(centre - half), 3), round(math.exp(centre + half), 3)


def decide(interval: tuple[float, float] | None, op: str, bound: float) -> Verdict:
    """pass / fail when the whole interval is on one side of `bound`, else undecided."""
    if interval is None:
        return "undecided"
    low, high = interval
    if op == "<=":
        return "pass" if high <= bound else "fail" if low > bound else "undecided"
    return "pass" if low >= bound else "fail" if high < bound else "undecided"


def target(
    value: float | None, interval: tuple[float, float] | None, op: str, bound: float, method: str
) -> dict[str, Any]:
    """A target's entry in the report: figure, interval, bound, verdict (and `pass`: None if undecided)."""
    verdict = decide(interval, op, bound) if value is not None else "undecided"
    return {
        "value": value,
        "ci95": list(interval) if interval is not None else None,
        "target": f"{op} {bound:g}",
        "verdict": verdict,
        "pass": None if verdict == "undecided" else verdict == "pass",
        "interval": method,
    }


def overall(targets: dict[str, dict[str, Any]]) -> Verdict:
    """fail if any target fails, else undecided if any is, else pass."""
    verdicts = [t["verdict"] for t in targets.values()]
    return "fail" if "fail" in verdicts else "undecided" if "undecided" in verdicts else "pass"
