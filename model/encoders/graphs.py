"""The encoders' onnxruntime graphs as the service serves them by default on CPU.

`model.encoders.factory` calls these: each PyTorch transformer encoder is exported once into a cache
(`export_encoder_cached`, `model.encoders.onnx`'s exporters), in a directory named by its spec
(`graph_directory`: the spec's version fingerprints the weights), with the PyTorch fp32 vectors of fixed
probes beside the graph (`REFERENCE`); its MatMul/Gemm weights are quantised to int8
(`quantize_encoder_graph`), and a graph serves only if its vectors agree with those reference vectors
(`reference_cosine` >= `PARITY_COSINE` over `probe_inputs`). A start whose graphs are in the cache thus
needs no PyTorch encoder at all: the checkpoint's recorded spec names the directory.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.encoders.base import EncoderSpec
from model.encoders.emotion2vec import Emotion2VecEncoder
from model.encoders.onnx import (
    GRAPH_FILE,
    META_FILE,
    OPSET,
    OnnxEmotion2VecEncoder,
    OnnxEncoder,
    OnnxTextEncoder,
    export_emotion2vec,
    export_text_encoder,
    write_meta,
)
from model.encoders.text import HFTextEncoder
from model.paths import write_once

logger = logging.getLogger(__name__)

EXPORT_VERSION = 2  # bump when the exported graphs change, so cached ones are written again (2: REFERENCE)
REFERENCE = "reference.npy"  # beside each graph: the PyTorch fp32 vectors of `probe_inputs`, (P, D)
REJECTED = "rejected.json"  # beside a graph that failed the probe parity: its cosine (never copied)
# Lowest cosine to the PyTorch fp32 vectors a graph may have on the probes and still serve (int8 included:
# the measured bound on the shipped checkpoint's predictions is in tests/test_encoders_served.py).
PARITY_COSINE = 0.999
_EXPORTERS: dict[type, Any] = {HFTextEncoder: export_text_encoder, Emotion2VecEncoder: export_emotion2vec}


def exportable(encoder: Any) -> bool:
    """Whether `model.encoders.onnx` can export `encoder` (its PyTorch transformer encoders)."""
    return type(encoder) in _EXPORTERS


def graph_directory(spec: EncoderSpec, cache_dir: str | Path) -> Path:
    """Where the fp32 graph of the encoder with this spec lives in `cache_dir` (it may not exist yet).

    Keyed by the spec (its version fingerprints the weights), the exporter and onnxruntime, so new
    weights or an upgrade get a new graph.
    """
    import onnxruntime

    digest = hashlib.sha256(
        f"{spec.name}/{spec.version}/{spec.dim}/{EXPORT_VERSION}/{OPSET}/{torch.__version__}/"
        f"{onnxruntime.__version__}".encode()
    ).hexdigest()[:20]
    return Path(cache_dir) / "encoders" / f"{spec.modality}-{digest}"


def export_encoder_cached(
    encoder: HFTextEncoder | Emotion2VecEncoder, cache_dir: str | Path, *, refresh: bool = False
) -> Path:
    """The fp32 graph directory of `encoder` in `cache_dir` (`graph_directory`), exported on first use
    (atomically), with the probes' vectors of `encoder` in fp32 on CPU beside it (`REFERENCE`), whatever
    precision and device it serves at: they are what every later start checks the graph against.
    `refresh`: write it again, and drop its int8 copies (a reference that disagreed with the weights).
    """
    spec = encoder.spec
    export = _EXPORTERS[type(encoder)]
    target = graph_directory(spec, cache_dir)

    def write(staging: Path) -> None:
        logger.info("exporting the %s encoder %s to %s (once)", spec.modality, spec.name, target)
        with _quiet():
            export(encoder, staging)
        np.save(staging / REFERENCE, encode_each(fp32_cpu(encoder), probe_inputs(encoder)))

    return _locked_write_once(target, write, refresh=refresh)


def fp32_cpu(encoder: Any) -> Any:
    """`encoder` itself when it runs fp32 on CPU, else a copy that does (its module copied to float32 on
    CPU, autocast off): the reference every graph is checked against."""
    if encoder.device.type == "cpu" and not (
        getattr(encoder, "fp16", False) or getattr(encoder, "bf16", False)
    ):
        return encoder
    reference = copy.copy(encoder)
    reference.pooler = copy.deepcopy(encoder.pooler).float().cpu().eval()
    reference.device = torch.device("cpu")
    reference.fp16 = reference.bf16 = False
    return reference


def reference_agrees(graph: str | Path, encoder: Any, bound: float = 0.9999) -> bool:
    """Whether the vectors stored beside `graph` are `encoder`'s own (fp32, CPU) on the probes."""
    try:
        return reference_cosine(graph, fp32_cpu(encoder)) >= bound
    except (OSError, ValueError):  # missing, unreadable or of another shape
        return False


def _locked_write_once(target: Path, write: Any, *, refresh: bool = False) -> Path:
    """`write_once` under a file lock beside `target`: processes starting together (replicas on one
    cache volume, test workers) export a graph once and the others wait for it, instead of each
    spending the same minutes of CPU. `refresh` writes it again and removes its `-int8*` copies."""
    from filelock import FileLock

    if (target / GRAPH_FILE).is_file() and not refresh:
        return target

    def readable(staging: Path) -> None:
        write(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would keep other users (the image's service user) out

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if refresh:
            for copy_dir in target.parent.glob(f"{target.name}-int8*"):
                shutil.rmtree(copy_dir, ignore_errors=True)
        return write_once(target, GRAPH_FILE, readable, overwrite=refresh)


def quantize_encoder_graph(directory: str | Path, *, reduce_range: bool | None = None) -> Path:
    """An int8 copy of an exported encoder directory, beside it, written once.

    onnxruntime's dynamic quantisation: MatMul/Gemm weights stored as int8 (per tensor), activations
    quantised per call (u8s8 kernels). Convolutions stay fp32 (ConvInteger is slower). `reduce_range`
    (default: on a CPU without VNNI, `has_int8_dot_product`) stores 7-bit weights, onnxruntime's remedy
    for the saturation of its AVX2 / AVX-512 kernels without VNNI; that copy is `<name>-int8-r7`, the
    full-range one `<name>-int8`, so a cache shared by machines of both kinds holds both. The copy's
    encoder.json says `"precision": "int8"` and `"reduce_range"`; the other files are copied as is.
    """
    from model.encoders.precision import has_int8_dot_product

    source = Path(directory)
    reduce = not has_int8_dot_product() if reduce_range is None else reduce_range

    def write(out: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for item in source.iterdir():
            if item.is_file() and item.name not in (GRAPH_FILE, META_FILE, REJECTED):  # not the fp32 verdict
                shutil.copyfile(item, out / item.name)
        meta = json.loads((source / META_FILE).read_text())
        write_meta(out, {**meta, "precision": "int8", "reduce_range": reduce})
        with _quiet():
            quantize_dynamic(
                source / GRAPH_FILE,
                out / GRAPH_FILE,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                reduce_range=reduce,
            )

    return _locked_write_once(source.with_name(f"{source.name}-int8{'-r7' if reduce else ''}"), write)


def load_onnx_encoder(
    directory: str | Path, *, device: str = "auto", intra_op_threads: int | Sequence[int] | None = None
) -> OnnxEncoder:
    """The onnxruntime encoder of an exported directory (text or emotion2vec, from its encoder.json)."""
    kind = json.loads((Path(directory) / META_FILE).read_text()).get("kind")
    cls = OnnxTextEncoder if kind == "hf-text" else OnnxEmotion2VecEncoder
    return cls(directory, device=device, intra_op_threads=intra_op_threads)


PROBE_TEXTS = (
    "Hello.",
    "I can't believe you did that to me, again!",
    "Well, I guess we'll just have to wait and see what happens tomorrow morning.",
    "Thank you so much, this is the best news I've heard all year.",
    "No. No, no, no. Leave me alone.",
    "Okay.",
)


def probe_inputs(encoder: Any) -> list[Any]:
    """Fixed inputs on which a graph's vectors are compared with PyTorch's: short and long texts, or
    0.3-4 s of voiced tones in noise at the encoder's rate (deterministic)."""
    if encoder.spec.modality == "text":
        return list(PROBE_TEXTS)
    rng = np.random.default_rng(20241130)
    rate = int(encoder.sample_rate)
    waves = []
    for seconds, pitch in ((0.3, 120.0), (1.0, 220.0), (2.5, 180.0), (4.0, 300.0)):
        t = np.arange(int(seconds * rate)) / rate
        vibrato = pitch * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))
        voice = 0.3 * np.sin(2 * np.pi * np.cumsum(vibrato) / rate) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
        waves.append((voice + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return waves


def encode_each(encoder: Any, items: Sequence[Any]) -> np.ndarray:
    """(len(items), D) float32: each item encoded alone (batch 1, as the probes are compared)."""
    return np.stack([encoder.encode_batch([item])[0].float().cpu().numpy() for item in items])


def reference_cosine(directory: str | Path, candidate: Any) -> float:
    """The lowest cosine over `probe_inputs` between `candidate`'s vectors and the PyTorch fp32 ones
    stored beside the graph it was exported from (`REFERENCE`; an int8 copy carries its source's)."""
    reference = np.load(Path(directory) / REFERENCE)
    vectors = encode_each(candidate, probe_inputs(candidate))
    if vectors.shape != reference.shape:
        raise ValueError(
            f"{Path(directory).name}: probe vectors {vectors.shape} vs reference {reference.shape}"
        )
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.min(np.sum(vectors * reference, axis=1) / np.maximum(norms, 1e-12)))


def parity_cosine(reference: Any, candidate: Any, items: Sequence[Any]) -> float:
    """The lowest cosine between the two encoders' vectors over `items`, each encoded alone."""
    lowest = 1.0
    for item in items:
        a = reference.encode_batch([item])[0].float()
        b = candidate.encode_batch([item])[0].float()
        lowest = min(lowest, float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    return lowest


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' and the quantiser's warnings and progress chatter off (they are not ours)."""
    root = logging.getLogger()  # onnxruntime.quantization logs its progress with logging.info
    chatter = _BelowError()
    root.addFilter(chatter)  # a logger's filter sees only what is logged on it: other loggers pass
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            # the dynamo exporter prints its progress on stdout: keep it off `lpgnet evaluate --json`
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(chatter)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR
