"""Reduced-precision inference for the PyTorch encoders: one rule, shared by text and audio.

"bf16" runs an encoder's forward under `torch.autocast("cpu", dtype=torch.bfloat16)`: matrix
products and convolutions in bfloat16 with fp32 accumulation, norms and softmax in fp32. On CPUs with
native bf16 (AVX512-BF16 or AMX) that is 1.4-1.8x less CPU per emotion2vec-base clip (bench/RESULTS.md);
without it, torch emulates bf16 and it is slower than fp32, so "auto" only picks it where it is native.

It is a runtime choice, not part of an encoder's identity (`EncoderSpec`): a checkpoint trained on
fp32 features is served with bf16 ones. That is only allowed because of the parity bound tested in
`tests/test_precision.py` on real inputs: cosine >= 0.99 between bf16 and fp32 vectors, and >= 99%
of the shipped checkpoint's IEMOCAP test predictions unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from typing import Literal

import torch

# int8 is onnxruntime's (dynamic quantisation, `model.encoders.onnx`); auto: int8 in onnxruntime where its
# parity holds, else bf16 autocast in PyTorch where the CPU has it (`model.encoders.factory`)
Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "int8")


@functools.cache
def has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AVX512-BF16 or AMX on x86, oneDNN's check elsewhere.

    oneDNN's own `_is_mkldnn_bf16_supported` is true on any AVX-512 x86 CPU, including those that
    only emulate bf16 (slower than fp32), so x86 asks for the instructions themselves.
    """
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch built without oneDNN
        return False


@functools.cache
def has_int8_dot_product() -> bool:
    """Whether this CPU multiplies u8 x s8 without saturating: VNNI (AVX512-VNNI or AVX-VNNI) on x86;
    True elsewhere (ARM's dot-product kernels do not saturate). Without it onnxruntime's int8 kernels
    add pairs of u8 x s8 products in 16 bits (vpmaddubsw), which saturates on full-range weights: its
    documented remedy is 7-bit weights (`reduce_range`), which `model.encoders.graphs` then writes."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:  # not Linux: torch's check (AVX512-VNNI only)
        return bool(torch.cpu._is_vnni_supported())
    return "avx512_vnni" in flags or "avx_vnni" in flags


def resolve_bf16(precision: Precision, device: torch.device) -> bool:
    """True when encoders on `device` should run under bf16 autocast.

    "auto": on CPUs with native bf16, off elsewhere (CUDA keeps each encoder's own fp16 rule).
    "bf16" on CUDA is refused: this autocast path is for CPUs.
    """
    if precision not in PRECISIONS or precision == "int8":
        raise ValueError(f"PyTorch precision must be one of auto, fp32, bf16, got {precision!r}")
    if device.type != "cpu":
        if precision == "bf16":
            raise ValueError("precision 'bf16' is the CPU autocast path; on CUDA use fp32 (or fp16)")
        return False
    return precision == "bf16" or (precision == "auto" and has_native_bf16())


def precision_name(*, fp16: bool, bf16: bool) -> str:
    """What an encoder reports as its precision: "fp16", "bf16" or "fp32"."""
    return "fp16" if fp16 else "bf16" if bf16 else "fp32"


@contextlib.contextmanager
def cpu_autocast(enabled: bool) -> Iterator[None]:
    """bf16 autocast on CPU when `enabled`, else nothing."""
    if not enabled:
        yield
        return
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield
