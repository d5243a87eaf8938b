"""ONNX graphs of the encoders and onnxruntime encoders that serve them.

Export writes a self-contained directory:

    model.onnx     the graph (dynamic batch and length axes, pooling inside the graph)
    encoder.json   kind, spec, and the pre-processing settings the runtime side needs
    tokenizer files (text only)

Text graph: `input_ids`, `attention_mask` [, `token_type_ids`] (B, L) int64 -> `utterance_vector` (B, D).
emotion2vec graph: `source` (B, S) float32 normalised + zero-padded 16 kHz waveforms and
`padding_mask` (B, S) bool (True = padding) -> `utterance_vector` (B, D), the mean over valid frames.

The exported modules are the very ones the PyTorch encoders run (`TextPooler`, `Emotion2VecPooler`),
so the ONNX encoders carry the same `EncoderSpec`: a checkpoint trained with the PyTorch encoder
serves with the ONNX one. Export uses torch's dynamo exporter and falls back to the TorchScript
exporter if it fails.

Served by default on CPU (`model.encoders.factory.checkpoint_encoders`, backend auto): each PyTorch
encoder is exported once into a cache (`export_encoder_cached`), its MatMul/Gemm weights quantised to
int8 (`quantize_encoder_graph`), and the graph serves only if its vectors agree with the PyTorch fp32
ones on fixed probes (`parity_cosine` >= `PARITY_COSINE`). An encoder holds one session per thread
count it is given and runs the one matching its caller's torch intra-op count, so the service's core
budget (`app.cores`) steers it like a PyTorch encoder: every core for a lone call, one under load.
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
from model.encoders.devices import count_available_cpus
from model.encoders.emotion2vec import SAMPLE_RATE, Emotion2VecEncoder, length_batches, prepare_waveforms
from model.encoders.text import (
    MODEL_INPUT_NAMES,
    HFTextEncoder,
    encode_by_length,
    tokenize_texts,
)
from model.encoders.tiny import write_once

logger = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
META_FILE = "encoder.json"
OPSET = 18
EXPORT_VERSION = 1  # bump when the exported graphs change, so cached ones are written again
# Lowest cosine to the PyTorch fp32 vectors a graph may have on the probes and still serve (int8 included:
# the measured bound on the shipped checkpoint's predictions is in tests/test_encoders_served.py).
PARITY_COSINE = 0.999
OUTPUT_NAME = "utterance_vector"  # not "embedding": the dynamo exporter names an aten.embedding value so


def export_text_encoder(
    encoder: HFTextEncoder, out_dir: str | Path, *, dynamo: bool = True, opset: int = OPSET
) -> Path:
    """Export the text encoder (transformer + pooling [+ L2 norm]) and its tokenizer to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(encoder.pooler).float().cpu().eval()
    inputs, _ = tokenize_texts(
        encoder.tokenizer, ["a short text", "and a rather longer one, for shapes"], encoder.max_length
    )
    names = [n for n in MODEL_INPUT_NAMES if n in inputs]  # TextPooler.forward's positional order
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    args = tuple(inputs[n] for n in names)
    _export(module, args, out / GRAPH_FILE, names, axes, dynamo=dynamo, opset=opset)
    encoder.tokenizer.save_pretrained(out)
    _write_meta(
        out,
        {
            "kind": "hf-text",
            "spec": encoder.spec.to_dict(),
            "max_length": encoder.max_length,
            "input_names": names,
        },
    )
    return out


def export_emotion2vec(
    encoder: Emotion2VecEncoder, out_dir: str | Path, *, dynamo: bool = True, opset: int = OPSET
) -> Path:
    """Export emotion2vec with padding mask and valid-frame mean pooling to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(encoder.pooler).float().cpu().eval()
    rng = np.random.default_rng(0)
    dummy = [rng.standard_normal(n).astype(np.float32) for n in (SAMPLE_RATE, SAMPLE_RATE * 6 // 10)]
    source, padding_mask = prepare_waveforms(
        dummy, normalize=encoder.normalize, min_samples=module.min_samples
    )
    axes = {"source": {0: "batch", 1: "samples"}, "padding_mask": {0: "batch", 1: "samples"}}
    _export(
        module,
        (source, padding_mask),
        out / GRAPH_FILE,
        ["source", "padding_mask"],
        axes,
        dynamo=dynamo,
        opset=opset,
    )
    _write_meta(
        out,
        {
            "kind": "emotion2vec",
            "spec": encoder.spec.to_dict(),
            "sample_rate": SAMPLE_RATE,
            "normalize": encoder.normalize,
            "min_samples": module.min_samples,
        },
    )
    return out


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    *,
    dynamo: bool,
    opset: int,
) -> None:
    """torch.onnx.export with dynamic axes; the dynamo exporter first, TorchScript as a fallback."""
    common: dict[str, Any] = {
        "input_names": input_names,
        "output_names": [OUTPUT_NAME],
        "dynamic_axes": {**dynamic_axes, OUTPUT_NAME: {0: "batch"}},
        "opset_version": opset,
    }
    if dynamo:
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, **common)
            return
        except Exception as exc:  # the dynamo exporter's failures come as many exception types
            logger.warning("dynamo ONNX export failed (%s); retrying with the TorchScript exporter", exc)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(module, args, str(path), dynamo=False, **common)


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def _read_meta(directory: Path, kind: str) -> dict[str, Any]:
    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{directory.name}: expected an exported {kind} encoder, found {meta.get('kind')!r}")
    return meta


def create_session(path: str | Path, *, device: str = "auto", intra_op_threads: int | None = None) -> Any:
    """An onnxruntime session: CUDA when `device` is not "cpu" and onnxruntime has it, else CPU.

    `intra_op_threads` defaults to half the CPUs this process may use (at least 1): the service runs a
    text and an audio session side by side, and onnxruntime's own default (all cores each)
    oversubscribes. Idle pool threads do not spin: they would take CPU from the other sessions.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or max(1, count_available_cpus() // 2)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = ["CPUExecutionProvider"]
    # Ask onnxruntime, not torch: the service pairs a CPU torch wheel with onnxruntime-gpu.
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        logger.warning("onnxruntime has no CUDAExecutionProvider here; running %s on CPU", Path(path).name)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class OnnxTextEncoder:
    """`HFTextEncoder` served by onnxruntime from an `export_text_encoder` directory."""

    sample_rate: int | None = None

    def __init__(
        self,
        directory: str | Path,
        *,
        device: str = "auto",
        intra_op_threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoTokenizer

        root = Path(directory)
        meta = _read_meta(root, "hf-text")
        self.spec = EncoderSpec.from_dict(meta["spec"])
        self.max_length = int(meta["max_length"])
        self.input_names: list[str] = list(meta["input_names"])
        self.precision = str(meta.get("precision", "fp32"))
        # dynamic int8 quantises activations with one scale per call, taken over the whole batch: a
        # vector would depend on its batch companions (and their padding). One text per call instead.
        self.batch_size = 1 if self.precision == "int8" else batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        self.sessions = _sessions(root / GRAPH_FILE, device, intra_op_threads)

    @property
    def session(self) -> Any:
        """The session this call runs: the one for the calling thread's torch intra-op count."""
        return _pick(self.sessions)

    def encode_with_info(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """texts: N strings -> ((N, D) float32, N truncation flags), as `HFTextEncoder`."""

        session = self.session

        def encode(batch: list[str]) -> tuple[torch.Tensor, list[bool]]:
            inputs, flags = tokenize_texts(self.tokenizer, batch, self.max_length)
            feed = {name: inputs[name].numpy().astype(np.int64) for name in self.input_names}
            return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0]), flags

        return encode_by_length(texts, self.spec.dim, self.batch_size, encode)

    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        """items: N strings -> (N, D) float32."""
        return self.encode_with_info(items)[0]


class OnnxEmotion2VecEncoder:
    """`Emotion2VecEncoder` served by onnxruntime from an `export_emotion2vec` directory."""

    sample_rate: int | None = SAMPLE_RATE

    def __init__(
        self,
        directory: str | Path,
        *,
        device: str = "auto",
        intra_op_threads: int | None = None,
        max_batch_seconds: float = 120.0,
    ) -> None:
        root = Path(directory)
        meta = _read_meta(root, "emotion2vec")
        self.spec = EncoderSpec.from_dict(meta["spec"])
        self.normalize = bool(meta["normalize"])
        self.min_samples = int(meta["min_samples"])
        self.precision = str(meta.get("precision", "fp32"))
        # int8: one clip per call, as for text (activation scales are per call)
        self.max_batch_samples = 0 if self.precision == "int8" else int(max_batch_seconds * SAMPLE_RATE)
        self.sessions = _sessions(root / GRAPH_FILE, device, intra_op_threads)

    @property
    def session(self) -> Any:
        """The session this call runs: the one for the calling thread's torch intra-op count."""
        return _pick(self.sessions)

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """items: N waveforms (S_i,) float32 at 16 kHz -> (N, D) float32."""
        out = np.zeros((len(items), self.spec.dim), dtype=np.float32)
        session = self.session
        for idx in length_batches([np.asarray(w).size for w in items], self.max_batch_samples):
            source, padding_mask = prepare_waveforms(
                [items[i] for i in idx], normalize=self.normalize, min_samples=self.min_samples
            )
            feed = {"source": source.numpy(), "padding_mask": padding_mask.numpy()}
            out[idx] = session.run([OUTPUT_NAME], feed)[0]
        return torch.from_numpy(out)


OnnxEncoder = OnnxTextEncoder | OnnxEmotion2VecEncoder
_EXPORTERS: dict[type, Any] = {HFTextEncoder: export_text_encoder, Emotion2VecEncoder: export_emotion2vec}


def _sessions(path: Path, device: str, threads: int | Sequence[int] | None) -> dict[int, Any]:
    """One session per thread count (`threads` None: `create_session`'s default), keyed by it."""
    counts = [threads] if threads is None or isinstance(threads, int) else sorted(set(threads))
    sessions = {}
    for count in counts:
        session = create_session(path, device=device, intra_op_threads=count)
        sessions[int(session.get_session_options().intra_op_num_threads)] = session
    return sessions


def _pick(sessions: dict[int, Any]) -> Any:
    """The session with the most threads not above this thread's torch intra-op count (the core
    budget's lease sets it), else the smallest."""
    if len(sessions) == 1:
        return next(iter(sessions.values()))
    wanted = torch.get_num_threads()
    fitting = [count for count in sessions if count <= wanted]
    return sessions[max(fitting) if fitting else min(sessions)]


def exportable(encoder: Any) -> bool:
    """Whether `model.encoders.onnx` can export `encoder` (its PyTorch transformer encoders)."""
    return type(encoder) in _EXPORTERS


def export_encoder_cached(encoder: HFTextEncoder | Emotion2VecEncoder, cache_dir: str | Path) -> Path:
    """The fp32 graph directory of `encoder` in `cache_dir`, exported on first use (atomically).

    Keyed by the encoder's spec (its version fingerprints the weights), the exporter and onnxruntime,
    so new weights or an upgrade get a new graph. The export runs in fp32 on CPU whatever precision
    the encoder serves at.
    """
    import onnxruntime

    spec = encoder.spec
    digest = hashlib.sha256(
        f"{spec.name}/{spec.version}/{spec.dim}/{EXPORT_VERSION}/{OPSET}/{torch.__version__}/"
        f"{onnxruntime.__version__}".encode()
    ).hexdigest()[:20]
    export = _EXPORTERS[type(encoder)]
    target = Path(cache_dir) / "encoders" / f"{spec.modality}-{digest}"

    def write(staging: Path) -> None:
        logger.info("exporting the %s encoder %s to %s (once)", spec.modality, spec.name, target)
        with _quiet():
            export(encoder, staging)

    return _locked_write_once(target, write)


def _locked_write_once(target: Path, write: Any) -> Path:
    """`write_once` under a file lock beside `target`: processes starting together (replicas on one
    cache volume, test workers) export a graph once and the others wait for it, instead of each
    spending the same minutes of CPU."""
    from filelock import FileLock

    if (target / GRAPH_FILE).is_file():
        return target

    def readable(staging: Path) -> None:
        write(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would keep other users (the image's service user) out

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        return write_once(target, GRAPH_FILE, readable)


def quantize_encoder_graph(directory: str | Path) -> Path:
    """An int8 copy of an exported encoder directory, beside it (`<name>-int8`), written once.

    onnxruntime's dynamic quantisation: MatMul/Gemm weights stored as int8 (per tensor), activations
    quantised per call (u8s8 kernels, VNNI where the CPU has it). Convolutions stay fp32 (ConvInteger is
    slower). The copy's encoder.json says `"precision": "int8"`; the tokenizer files are copied as is.
    """
    source = Path(directory)

    def write(out: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for item in source.iterdir():
            if item.is_file() and item.name not in (GRAPH_FILE, META_FILE):
                shutil.copyfile(item, out / item.name)
        meta = json.loads((source / META_FILE).read_text())
        _write_meta(out, {**meta, "precision": "int8"})
        with _quiet():
            quantize_dynamic(
                source / GRAPH_FILE,
                out / GRAPH_FILE,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )

    return _locked_write_once(source.with_name(f"{source.name}-int8"), write)


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
