"""The service on a CUDA GPU, in one JSON: what `bench/gpu.sh` runs after installing what it needs.

    python -m bench.gpu [--smoke] [--device auto|cuda|cpu] [--requests N] [--out PATH] [--cache DIR]

On `cuda` when torch sees a GPU, else on `cpu`: then "device" says "cpu" and "note" says why, and the
figures only show that the script runs. The production-size random encoders of `bench.models` (tiny
ones with --smoke), the 16 RAVDESS clips or synthetic stand-ins where ../shared is absent.

    p50_ms, p95_ms          the service in process (`Engine.submit`, no HTTP) at concurrency 1
    throughput_rps_16/_64   16 and 64 conversations at once, closed loop, in process
    encoders                per encoder, batch 1 over the clips: PyTorch fp32, fp16 and bf16 autocast,
                            onnxruntime on the `model.encoders.onnx` export; p50 ms and cosine to fp32
    parity                  per encoder, the lowest cosine of fp16 and of bf16 to fp32
    onnxruntime_over_torch_p50  per encoder, onnxruntime p50 over PyTorch fp32 p50 (and the provider)
    targets                 the CUDA targets: p50 <= 15 ms, >= 500 utterances/s at 64 conversations

`--missing-requirements` prints the project's dependencies this interpreter lacks (torch only if it has
none: a CUDA build already there is kept), for `bench/gpu.sh` to install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from model.paths import REPO_ROOT, cache_root  # stdlib only: --missing-requirements runs before installs

log = logging.getLogger("bench")

DEFAULT_OUT = cache_root() / "bench" / "gpu.json"
TARGET_P50_MS = 15.0
TARGET_RPS_64 = 500.0
LEVELS = (16, 64)


def missing_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The project's runtime requirements not installed here; torch unpinned, and only if absent."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, distribution

    missing = []
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append("torch" if name == "torch" else requirement)
    return missing


async def run_gpu(*, smoke: bool, device: str, requests: int | None, cache: Path) -> dict[str, Any]:
    import torch

    from bench.modes import InProcessMode
    from bench.options import BenchOptions, Plan
    from bench.sections import run_concurrency, run_latency
    from bench.serving import close_engine, load_engine, prepare_served
    from bench.workload import RAVDESS_DIR, load_clips, synthetic_clips

    started = time.perf_counter()
    cuda = device != "cpu" and torch.cuda.is_available()
    note = None
    if not cuda:
        why = "asked for" if device == "cpu" else "torch sees no CUDA device"
        note = f"CPU fallback ({why}): the figures only show that the script runs, not the GPU targets"
    opts = BenchOptions(kind="smoke" if smoke else "quick", device="cuda" if cuda else "cpu", cache=cache)
    n = requests or (4 if smoke else 64)
    plan = Plan(
        latency=n, requests=n, rounds=1 if smoke else 2, warmup=3, overhead=0, flat=0, flat_prefill="store"
    )
    clips = load_clips() if RAVDESS_DIR.is_dir() else synthetic_clips(cache / "synthetic-clips")
    main, _ = await asyncio.to_thread(prepare_served, opts)
    engine = await load_engine(main, opts)
    try:
        mode = InProcessMode(engine)
        latency = (await run_latency([mode], clips, count=plan.latency, warmup=plan.warmup))[mode.name]
        throughput = {}
        for level in LEVELS:
            log.info("%d conversations", level)
            throughput[level] = (await run_concurrency([mode], clips, level, plan))[mode.name].figures()
    finally:
        await close_engine(engine)
    encoders = await asyncio.to_thread(compare_encoders, main, opts.device, clips, cache, 3 if smoke else 16)
    figures = latency.figures()
    rps_64 = throughput[64].get("throughput_rps")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run": opts.kind,
        "device": opts.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "note": note,
        "clips": "ravdess" if RAVDESS_DIR.is_dir() else "synthetic",
        "p50_ms": figures.get("p50_ms"),
        "p95_ms": figures.get("p95_ms"),
        **{f"throughput_rps_{level}": throughput[level].get("throughput_rps") for level in LEVELS},
        "parity": {
            m: {p: v[f"torch-{p}"].get("cosine_min") for p in ("fp16", "bf16")} for m, v in encoders.items()
        },
        "onnxruntime_over_torch_p50": {
            m: _ratio(v["onnx-fp32"], v["torch-fp32"]) for m, v in encoders.items()
        },
        "targets": {
            "p50_ms": {"value": figures.get("p50_ms"), "target": f"<= {TARGET_P50_MS:g}"},
            "throughput_rps_64": {"value": rps_64, "target": f">= {TARGET_RPS_64:g}"},
        },
        "encoders": encoders,
        "latency": figures,
        "concurrency": {str(level): f for level, f in throughput.items()},
        "versions": _versions(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def compare_encoders(served: Any, device: str, clips: list[Any], cache: Path, count: int) -> dict[str, Any]:
    """Per encoder: PyTorch fp32, fp16 / bf16 autocast and onnxruntime at batch 1, p50 and cosine to fp32."""
    import torch

    from bench.serving import encoder_dirs
    from bench.stats import summarize
    from model.encoders.emotion2vec import SAMPLE_RATE, Emotion2VecEncoder
    from model.encoders.graphs import export_encoder_cached
    from model.encoders.onnx import OnnxEmotion2VecEncoder, OnnxTextEncoder
    from model.encoders.text import HFTextEncoder

    text_dir, audio_dir = encoder_dirs(served)
    encoders: dict[str, HFTextEncoder | Emotion2VecEncoder] = {  # fp32 references (text: fp16 on CUDA)
        "text": HFTextEncoder(text_dir, pooling="cls", device=device, fp16=False),
        "audio": Emotion2VecEncoder(audio_dir, device=device),
    }
    inputs = {
        "text": [c.transcript for c in clips[:count]],
        "audio": [c.waveform(SAMPLE_RATE) for c in clips[:count]],
    }
    graphs = {modality: export_encoder_cached(e, cache) for modality, e in encoders.items()}
    out: dict[str, Any] = {}
    for modality, encoder in encoders.items():
        variants: dict[str, Any] = {
            "torch-fp32": (encoder, None),
            "torch-fp16": (encoder, torch.float16),
            "torch-bf16": (encoder, torch.bfloat16),
        }
        with contextlib.suppress(Exception):  # reported below as missing
            kind = OnnxTextEncoder if modality == "text" else OnnxEmotion2VecEncoder
            variants["onnx-fp32"] = (kind(graphs[modality], device=device), None)
        reference: list[torch.Tensor] = []
        out[modality] = {}
        for name, (runner, dtype) in variants.items():
            try:
                vectors, times = _encode_each(runner, inputs[modality], device, dtype)
            except Exception as exc:  # an autocast dtype or provider this machine lacks
                out[modality][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            reference = reference or vectors
            pairs = zip(vectors, reference, strict=True)
            cosines = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in pairs]
            out[modality][name] = {
                **summarize(times),
                "cosine_min": round(min(cosines), 6),
                "cosine_mean": round(sum(cosines) / len(cosines), 6),
            }
        if "onnx-fp32" in variants:
            out[modality]["onnx-fp32"]["provider"] = variants["onnx-fp32"][0].session.get_providers()[0]
        else:
            out[modality]["onnx-fp32"] = {"error": "no onnxruntime session for the export"}
    return out


def _encode_each(encoder: Any, items: list[Any], device: str, dtype: Any) -> tuple[list[Any], list[float]]:
    """Batch-1 vectors (float32, CPU) and ms per item, after two warm-up calls; `dtype`: autocast or None."""
    import torch

    context = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    vectors, times = [], []
    with context:
        for item in items[:2]:
            encoder.encode_batch([item])  # kernels, autotuning, allocator
        for item in items:
            started = time.perf_counter()
            vectors.append(encoder.encode_batch([item])[0].float())  # .cpu() inside: synchronises
            times.append((time.perf_counter() - started) * 1000.0)
    return vectors, times


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if "p50_ms" not in a or not b.get("p50_ms"):
        return None
    return round(a["p50_ms"] / b["p50_ms"], 3)


def _versions() -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny random encoders, a few requests")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--requests", type=int, default=None, help="per section (default 64; smoke 4)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    parser.add_argument("--cache", type=Path, default=None, help="where the random encoders are kept")
    parser.add_argument("--missing-requirements", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.missing_requirements:
        print(" ".join(missing_requirements()))
        return 0
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    from bench.cli import quiet_libraries
    from bench.models import DEFAULT_CACHE

    quiet_libraries()
    options = {"smoke": args.smoke, "device": args.device, "requests": args.requests}
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
        report = asyncio.run(run_gpu(**options, cache=args.cache or DEFAULT_CACHE))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
