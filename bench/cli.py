"""`python -m bench` (and `lpgnet bench`): run the benchmark, print the figures, write the report."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from bench.options import DEFAULT_HIDDEN, DEFAULT_OUT
from bench.runner import run_bench
from model.encoders.precision import PRECISIONS

log = logging.getLogger("bench")


def _levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, e.g. 1,4,16") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return levels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service against the naive baseline and the encoder floor, side by side.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="few requests per section, more where a verdict is undecided"
    )
    size.add_argument("--smoke", action="store_true", help="tiny random encoders, a handful of requests (CI)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="service LPGNET_BACKEND (auto: the default); onnx serves an `lpgnet export` bundle",
    )
    parser.add_argument("--concurrency", type=_levels, default=(1, 4, 16), help="levels, default 1,4,16")
    parser.add_argument("--requests", type=int, default=None, help="requests per mode and level")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads, service and naive (default: each one's)"
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="service LPGNET_ENCODER_PRECISION"
    )
    parser.add_argument("--workers", type=int, default=None, help="service LPGNET_ENCODER_WORKERS")
    parser.add_argument("--batch-max-size", type=int, default=None, help="service LPGNET_BATCH_MAX_SIZE")
    parser.add_argument(
        "--batch-max-wait-ms", type=float, default=None, help="service LPGNET_BATCH_MAX_WAIT_MS"
    )
    parser.add_argument(
        "--hidden", type=int, default=DEFAULT_HIDDEN, help="D of the random LPGNet checkpoint"
    )
    parser.add_argument("--no-http", dest="http", action="store_false", help="skip the uvicorn service")
    parser.add_argument("--cache", type=Path, default=None, help="where the random encoders are kept")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,  # funasr warns at length on the root logger
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(logging.INFO)
    quiet_libraries()
    # stdout carries only the table or the JSON: library chatter goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        report = run_bench(
            args.quick,
            smoke=args.smoke,
            backend=args.backend,
            concurrency=args.concurrency,
            requests=args.requests,
            threads=args.threads,
            precision=args.precision,
            workers=args.workers,
            http=args.http,
            batch_max_size=args.batch_max_size,
            batch_max_wait_ms=args.batch_max_wait_ms,
            hidden=args.hidden,
            cache=args.cache,
            out=args.out,
        )
    from bench.report import format_table

    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def quiet_libraries() -> None:
    """Progress bars and notices of transformers would bury the figures."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
