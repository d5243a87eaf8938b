"""The benchmark: the service against the naive baseline and the encoder floor, in one run, side by side.

    python -m bench [--quick|--smoke] [--json] [--out PATH] [--backend torch|onnx]
                    [--concurrency 1,4,16] [--requests N] [--threads N]

`run_bench(quick, ...) -> dict` is the entry for `lpgnet bench`; `main(argv) -> int` is the CLI.
Nothing imports `bench`; it imports `app` and `model`. Figures and how to read them: bench/RESULTS.md.
"""

from __future__ import annotations

from typing import Any


def run_bench(quick: bool = False, **options: Any) -> dict[str, Any]:
    """Run the benchmark and return its report (options: `bench.options.BenchOptions.create`)."""
    from bench.runner import run_bench as _run_bench

    return _run_bench(quick, **options)


def main(argv: list[str] | None = None) -> int:
    from bench.cli import main as _main

    return _main(argv)


__all__ = ["main", "run_bench"]
