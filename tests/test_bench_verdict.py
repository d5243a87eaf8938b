"""bench/verdict.py: intervals and verdicts on made-up samples (no models, no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.verdict import (
    decide,
    median_interval,
    median_paired_difference,
    overall,
    p50_over_floor,
    paired_median_difference,
    paired_median_ratio,
    rounds_ratio,
)


@pytest.mark.parametrize(
    ("interval", "op", "expected"),
    [
        ((0.9, 1.1), "<=", "pass"),
        ((1.2, 1.3), "<=", "fail"),
        ((1.1, 1.2), "<=", "undecided"),
        ((1.6, 2.0), ">=", "pass"),
        ((1.0, 1.4), ">=", "fail"),
        ((1.4, 1.6), ">=", "undecided"),
        (None, "<=", "undecided"),
    ],
)
def test_decide_needs_the_whole_interval_on_one_side(interval, op, expected) -> None:  # type: ignore[no-untyped-def]
    bound = 1.15 if op == "<=" else 1.5
    assert decide(interval, op, bound) == expected


def test_p50_over_floor_sums_each_encoders_fastest_counted_candidate() -> None:
    service = [100.0] * 12
    parts = [{"text:a": 10.0, "text:b": 20.0, "audio:c": 50.0, "audio:d": 40.0, "audio:x": 1.0}] * 12
    accepted = {"text": ["text:a", "text:b"], "audio": ["audio:c", "audio:d"]}  # audio:x failed parity
    value, interval = p50_over_floor(service, parts, accepted)
    assert value == pytest.approx(100.0 / (10.0 + 40.0))
    assert interval == (pytest.approx(2.0), pytest.approx(2.0))


def test_p50_over_floor_interval_widens_with_noise_and_holds_the_value() -> None:
    service = [100.0, 140.0, 90.0, 120.0, 110.0, 95.0, 130.0, 105.0]
    parts = [{"text:a": 10.0 + i, "audio:b": 40.0 + 3 * i} for i in range(8)]
    value, interval = p50_over_floor(service, parts, {"text": ["text:a"], "audio": ["audio:b"]})
    assert interval is not None and interval[0] < value < interval[1]


def test_rounds_ratio_needs_two_rounds_and_is_a_t_interval_on_log_ratios() -> None:
    assert rounds_ratio([4.0], [2.0]) is None
    assert rounds_ratio([4.0, 4.0, 4.0], [2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = rounds_ratio([4.0, 4.4, 3.8], [2.0, 2.1, 2.0])  # type: ignore[misc]
    assert low < 2.0 < high and high - low > 0.1  # t with 2 degrees of freedom is wide


def test_median_and_paired_intervals_hold_their_point_values() -> None:
    x = [3.0, 3.5, 3.2, 4.0, 3.1, 3.3, 3.6, 3.4]
    low, high = median_interval(x)  # type: ignore[misc]
    assert low <= 3.35 <= high
    assert paired_median_ratio([2.0] * 5, [1.0] * 5) == (2.0, 2.0)
    assert median_interval([3.0]) is None


def test_paired_median_difference_is_the_gap_of_the_medians_with_its_noise() -> None:
    """HTTP - in-process: a constant gap has a point interval; a noisy one straddles its value."""
    inproc = [300.0, 310.0, 305.0, 320.0, 298.0, 315.0]
    assert paired_median_difference([x + 7.0 for x in inproc], inproc) == (7.0, 7.0)
    http = [x + g for x, g in zip(inproc, [2.0, 30.0, 5.0, 12.0, 9.0, 1.0], strict=True)]
    low, high = paired_median_difference(http, inproc)  # type: ignore[misc]
    assert low < high and decide((low, high), "<=", 15.0) != "fail"
    assert paired_median_difference([1.0], [0.0]) is None


def test_the_median_per_request_difference_cancels_what_the_clips_cost() -> None:
    """Clips of different cost (200-300 ms), each sent both ways with 10 ms of timing noise and 8 ms more
    over HTTP: the per-request differences see the gap through the clips' spread, which widens the
    interval of the gap of the two medians; a real 40 ms gap fails."""
    rng = np.random.default_rng(1)
    clips = rng.uniform(200.0, 300.0, 40)
    inproc = list(clips + rng.normal(0.0, 10.0, 40))
    http = list(clips + 8.0 + rng.normal(0.0, 10.0, 40))
    gap, interval = median_paired_difference(http, inproc)
    assert gap is not None and interval is not None and interval[0] <= gap <= interval[1]
    assert interval[0] < 8.0 < interval[1] and decide(interval, "<=", 15.0) != "fail"
    wide = paired_median_difference(http, inproc)
    assert wide is not None and wide[1] - wide[0] > 1.3 * (interval[1] - interval[0])
    slow = [x + 32.0 for x in http]  # 40 ms in all
    assert decide(median_paired_difference(slow, inproc)[1], "<=", 15.0) == "fail"
    assert median_paired_difference([], []) == (None, None)


def test_overall_fails_on_any_failure_else_waits_on_any_undecided() -> None:
    def targets(*verdicts: str) -> dict[str, dict[str, str]]:
        return {str(i): {"verdict": v} for i, v in enumerate(verdicts)}

    assert overall(targets("pass", "pass")) == "pass"
    assert overall(targets("pass", "undecided")) == "undecided"
    assert overall(targets("undecided", "fail")) == "fail"
