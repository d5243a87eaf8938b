"""`python -m bench` runs end to end and writes its report (the figures themselves are not tested).

The smoke run uses the tiny random encoders, a handful of requests per section and the uvicorn
service on loopback, so it finishes in well under a minute; the real benchmark is `--quick` or full.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.workload import RAVDESS_DIR

REPO = Path(__file__).resolve().parents[1]
REQUIRED_POSITIVE = (
    "p50_ms",
    "floor_p50_ms",
    "naive_p50_ms",
    "throughput_rps_16",
    "naive_throughput_rps_16",
    "overhead_p50_ms_ctx64",
    "offline_p50_ms",
    "peak_rss_mb",
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"RAVDESS clips not found at {RAVDESS_DIR}")
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "report.json"
    command = [
        sys.executable,
        "-m",
        "bench",
        "--smoke",
        "--json",
        "--out",
        str(out),
        "--cache",
        str(tmp / "cache"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


@pytest.mark.slow
def test_bench_smoke_writes_report_with_required_positive_figures(
    smoke_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = smoke_run
    report = json.loads(out.read_text())
    for key in REQUIRED_POSITIVE:
        assert isinstance(report[key], int | float) and report[key] > 0, (key, report.get(key))
    assert isinstance(report["device"], str) and report["device"]
    assert report["run"] == "smoke"
    assert set(report["concurrency"]) == {"1", "4", "16"}


@pytest.mark.slow
def test_bench_json_flag_prints_the_report_alone_on_stdout(
    smoke_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = smoke_run
    assert json.loads(done.stdout) == json.loads(out.read_text())


@pytest.mark.slow
def test_bench_smoke_reports_targets_and_ratios(
    smoke_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = smoke_run
    report = json.loads(out.read_text())
    assert set(report["targets"]) >= {"p50_over_floor", "throughput_16_over_naive", "overhead_p50_ms_ctx64"}
    for target in report["targets"].values():
        assert target["pass"] in (True, False)
    assert report["ratios"]["service_over_floor_p50"] > 0
    assert report["overhead"]["context_size"] == [
        64
    ]  # the overhead figure really had 64 utterances of context


def test_bench_cli_rejects_bad_concurrency_levels() -> None:
    from bench.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--concurrency", "0,4"])
    assert build_parser().parse_args(["--concurrency", "1,16"]).concurrency == (1, 16)
