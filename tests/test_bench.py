"""`lpgnet bench --quick` runs end to end and writes its report (the figures themselves are not tested).

The quick run is the real benchmark with few requests: production-size random encoders (written once
under ~/.cache/lpgnet/bench-encoders, ~800 MB, outside the checkout, with their ONNX exports), the
naive baseline, the floor's candidates and the uvicorn service on loopback: a few minutes, up to
about 7 on a 2-core machine whose neighbours take half of it. The smoke runs (tiny encoders) share one
cache per module, so the tiny encoders' ONNX exports are written once. The verdict's statistics are
tested on made-up data in tests/test_bench_verdict.py.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.workload import RAVDESS_DIR
from model.paths import REPO_ROOT

REQUIRED_POSITIVE = (
    "p50_ms",
    "floor_p50_ms",
    "naive_p50_ms",
    "inprocess_p50_ms",
    "throughput_rps_16",
    "naive_throughput_rps_16",
    "overhead_p50_ms_ctx64",
    "offline_p50_ms",
    "time_to_ready_s",
    "peak_rss_mb",
)
VERDICTS = {"pass", "fail", "undecided"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"RAVDESS clips not found at {RAVDESS_DIR}")
    out = tmp_path_factory.mktemp("bench") / "report.json"
    lpgnet = shutil.which("lpgnet") or str(Path(sys.executable).with_name("lpgnet"))
    command = [lpgnet, "bench", "--quick", "--json", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


@pytest.fixture(scope="module")
def report(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    """The quick run's report, as it wrote it to --out."""
    _, out = quick_run
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_quick_writes_report_with_required_positive_figures(report: dict[str, Any]) -> None:
    for key in REQUIRED_POSITIVE:
        assert isinstance(report[key], int | float) and report[key] > 0, (key, report.get(key))
    assert isinstance(report["device"], str) and report["device"]
    if platform.machine() == "x86_64":  # which CPU of its name: family, model, the deciding instructions
        identity = report["machine"]["cpu_identity"]
        assert identity["family"] and identity["model"] and "avx2" in identity["features"]
        assert f"model {identity['model']}:" in report["device"]
    assert report["run"] == "quick" and report["backend"] == "auto"  # the service's defaults
    assert report["service_torch_threads"] >= 1 and report["naive_torch_threads"] >= 1
    assert set(report["concurrency"]) == {"1", "4", "16"}
    # time to ready per profile: the production one loaded beside the bench, the default one alone
    starts = report["time_to_ready_by_profile"]
    assert starts["production"]["time_to_ready_s"] == report["time_to_ready_s"]
    assert starts["production"]["alone"] is False
    (default,) = [start for name, start in starts.items() if name != "production"]
    assert default["alone"] is True and default["time_to_ready_s"] > 0 and default["rss_mb"] > 0


@pytest.mark.slow
def test_bench_json_flag_prints_the_report_alone_on_stdout(
    quick_run: tuple[subprocess.CompletedProcess[str], Path], report: dict[str, Any]
) -> None:
    done, _ = quick_run
    assert json.loads(done.stdout) == report


@pytest.mark.slow
def test_bench_quick_reports_targets_with_intervals_and_one_verdict(report: dict[str, Any]) -> None:
    assert set(report["targets"]) == {
        "p50_over_floor",
        "p50_over_naive",
        "http_minus_inproc_ms",
        "throughput_16_over_naive",
        "overhead_p50_ms_ctx64",
        "flat_cost_ratio",
    }
    gap = report["targets"]["http_minus_inproc_ms"]
    http, inproc = report["latency"]["http"]["p50_ms"], report["latency"]["inproc"]["p50_ms"]
    assert gap["p50_gap_ms"] == pytest.approx(http - inproc, abs=1.0)  # medians of the same requests
    assert gap["value"] is not None  # the median of the per-request differences decides
    for target in report["targets"].values():
        assert target["verdict"] in VERDICTS
        assert target["pass"] == {"pass": True, "fail": False, "undecided": None}[target["verdict"]]
        if target["verdict"] != "undecided":
            low, high = target["ci95"]
            assert low <= high
    verdicts = {t["verdict"] for t in report["targets"].values()}
    expected = "fail" if "fail" in verdicts else "undecided" if "undecided" in verdicts else "pass"
    assert report["verdict"] == expected
    assert report["ratios"]["service_over_floor_p50"] > 0
    # the overhead figure really had 64 utterances of context
    assert report["overhead"]["context_size"] == [64]


@pytest.mark.slow
def test_bench_quick_floor_is_the_fastest_counted_candidate_of_each_encoder(report: dict[str, Any]) -> None:
    rows = report["floor_candidates"]
    names = {(r["encoder"], r["name"]) for r in rows}
    for encoder in ("text", "audio"):
        assert (encoder, "torch-fp32-t1") in names  # the parity reference is always measured
        assert any(r["runtime"] == "onnx" for r in rows if r["encoder"] == encoder)
    best = {}
    for row in rows:
        assert row["p50_ms"] > 0 and 0 < row["cosine_min"] <= 1.0 + 1e-6
        assert row["accepted"] == (row["cosine_min"] >= row["parity_bound"])
        if row["accepted"]:
            best[row["encoder"]] = min(best.get(row["encoder"], float("inf")), row["p50_ms"])
    assert [r["name"] for r in rows if r["best"]]  # one best per encoder
    assert sum(1 for r in rows if r["best"]) == 2
    assert report["floor_p50_ms"] == pytest.approx(sum(best.values()), abs=0.02)
    assert sum(1 for r in rows if r["served"]) == 2  # the service runs one of the candidates per encoder


@pytest.mark.slow
def test_bench_quick_naive_throughput_is_its_best_thread_count(report: dict[str, Any]) -> None:
    naive = report["concurrency"]["16"]["naive"]
    by_variant = naive["throughput_rps_by_variant"]
    assert {"naive-t1", "naive-t2"} <= set(by_variant)
    assert report["naive_throughput_rps_16"] == max(by_variant.values())
    assert naive["variant"] == f"naive-t{report['naive_threads_16']}"


def test_bench_cli_rejects_bad_concurrency_levels() -> None:
    from bench.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--concurrency", "0,4"])
    assert build_parser().parse_args(["--concurrency", "1,16"]).concurrency == (1, 16)


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the smoke runs of this module: the tiny encoders and their ONNX exports, once."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.mark.slow
def test_bench_smoke_runs_on_the_tiny_encoders(tmp_path: Path, smoke_cache: Path) -> None:
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"RAVDESS clips not found at {RAVDESS_DIR}")
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "bench", "--smoke", "--no-http", "--out", str(out)]
    command += ["--cache", str(smoke_cache)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["run"] == "smoke" and report["p50_ms"] > 0 and report["service_mode"] == "inproc"


@pytest.mark.slow
def test_gpu_script_falls_back_to_cpu_and_writes_its_json(tmp_path: Path, smoke_cache: Path) -> None:
    """bench/gpu.sh with this interpreter (BENCH_PYTHON: no venv, no installs) on the tiny encoders."""
    import os

    import torch

    out = tmp_path / "gpu.json"
    env = {**os.environ, "BENCH_PYTHON": sys.executable}
    command = ["bash", str(REPO_ROOT / "bench" / "gpu.sh"), "--smoke", "--out", str(out)]
    command += ["--cache", str(smoke_cache)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report
    cuda = torch.cuda.is_available()
    assert report["device"] == ("cuda" if cuda else "cpu")
    assert (report["note"] is None) == cuda  # the fallback says so
    for key in ("p50_ms", "throughput_rps_16", "throughput_rps_64"):
        assert report[key] > 0, key
    for encoder in ("text", "audio"):
        variants = report["encoders"][encoder]
        assert variants["torch-fp32"]["cosine_min"] == pytest.approx(1.0)
        assert variants["onnx-fp32"]["p50_ms"] > 0 and variants["onnx-fp32"]["cosine_min"] > 0.999
        assert set(report["parity"][encoder]) == {"fp16", "bf16"}
        assert report["onnxruntime_over_torch_p50"][encoder] > 0
    assert set(report["targets"]) == {"p50_ms", "throughput_rps_64"}


def test_gpu_missing_requirements_lists_what_is_not_installed(tmp_path: Path) -> None:
    from bench.gpu import missing_requirements

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["torch==0.0.1", "numpy>=1", "no-such-package-xyz>=1"]\n')
    # installed ones are skipped whatever their pin (a CUDA torch is kept); the rest keep their spec
    assert missing_requirements(pyproject) == ["no-such-package-xyz>=1"]


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and shutil.which("cc")),
    reason="bench/no_amx.sh is for x86-64 Linux with a C compiler",
)
def test_no_amx_refuses_the_tile_permission_caps_onednn_and_passes_other_syscalls(tmp_path: Path) -> None:
    """bench/no_amx.sh: the permission MLAS and oneDNN ask for before using AMX is refused (EPERM, which
    the kernel never answers: 0 on an AMX CPU, EINVAL elsewhere), every other syscall() reaches libc."""
    import errno
    import os

    probe = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
        "amx = libc.syscall(158, 0x1023, 18); err = ctypes.get_errno(); "
        "print(amx, err, libc.syscall(39) == os.getpid(), os.environ.get('ONEDNN_MAX_CPU_ISA'))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # the shim is built there, not in ~/.cache
    script = str(REPO_ROOT / "bench" / "no_amx.sh")
    done = subprocess.run(
        ["bash", script, sys.executable, "-c", probe], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-1", str(errno.EPERM), "True", "AVX512_CORE_VNNI"]
    assert list((tmp_path / "lpgnet" / "no-amx").glob("no_amx-*.so"))
