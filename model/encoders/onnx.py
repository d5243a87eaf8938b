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

Served by default on CPU: `model.encoders.graphs` exports, quantises and checks them. An encoder holds
one session per thread count it is given and runs the one matching its caller's torch intra-op count, so
the service's core budget (`app.cores`) steers it like a PyTorch encoder: every core for a lone call, one
under load.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.encoders.base import EncoderSpec
from model.encoders.devices import count_available_cpus
from model.encoders.emotion2vec import SAMPLE_RATE, Emotion2VecEncoder, length_batches, prepare_waveforms
from model.encoders.text import (
    MODEL_INPUT_NAMES,
    FastTokenizer,
    HFTextEncoder,
    encode_by_length,
    tokenize_texts,
)

logger = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
META_FILE = "encoder.json"
OPSET = 18
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
    write_meta(
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
    write_meta(
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


def write_meta(out: Path, meta: dict[str, Any]) -> None:
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
        intra_op_threads: int | Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> None:
        root = Path(directory)
        meta = _read_meta(root, "hf-text")
        self.spec = EncoderSpec.from_dict(meta["spec"])
        self.max_length = int(meta["max_length"])
        self.input_names: list[str] = list(meta["input_names"])
        self.precision = str(meta.get("precision", "fp32"))
        # dynamic int8 quantises activations with one scale per call, taken over the whole batch: a
        # vector would depend on its batch companions (and their padding). One text per call instead.
        self.batch_size = 1 if self.precision == "int8" else batch_size
        self.tokenize = FastTokenizer.load(root, self.max_length) or _hf_tokenize(root, self.max_length)
        self.sessions = _sessions(root / GRAPH_FILE, device, intra_op_threads)

    @property
    def session(self) -> Any:
        """The session this call runs: the one for the calling thread's torch intra-op count."""
        return _pick(self.sessions)

    def encode_with_info(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """texts: N strings -> ((N, D) float32, N truncation flags), as `HFTextEncoder`."""

        session = self.session

        def encode(batch: list[str]) -> tuple[torch.Tensor, list[bool]]:
            inputs, flags = self.tokenize(batch)
            feed = {name: inputs[name].numpy().astype(np.int64) for name in self.input_names}
            return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0]), flags

        return encode_by_length(texts, self.spec.dim, self.batch_size, encode)

    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        """items: N strings -> (N, D) float32."""
        return self.encode_with_info(items)[0]


def _hf_tokenize(
    root: Path, max_length: int
) -> Callable[[Sequence[str]], tuple[dict[str, torch.Tensor], list[bool]]]:
    """`tokenize_texts` with the directory's tokenizer through transformers (a tokenizer without
    `tokenizer.json`, which `FastTokenizer` cannot read)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    return lambda texts: tokenize_texts(tokenizer, texts, max_length)


class OnnxEmotion2VecEncoder:
    """`Emotion2VecEncoder` served by onnxruntime from an `export_emotion2vec` directory."""

    sample_rate: int | None = SAMPLE_RATE

    def __init__(
        self,
        directory: str | Path,
        *,
        device: str = "auto",
        intra_op_threads: int | Sequence[int] | None = None,
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
