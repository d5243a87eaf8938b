"""ONNX export of LPGNet and an onnxruntime runner with the same call signature.

The graph takes text (B, U, Dt), audio (B, U, Da), text_mask and audio_mask (B, U) bool, with B and
U dynamic, and returns the three logit tensors (B, U, C). Normalisation statistics are buffers of the
model, so they are inside the graph: the runner feeds raw encoder vectors, exactly like PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import TEXT_NETWORKS
from model.encoders.factory import MANIFEST
from model.encoders.onnx import create_session
from model.lpgnet import LPGNet, LPGNetOutput, last_rows, take_rows

log = logging.getLogger(__name__)

INPUT_NAMES = ["text", "audio", "text_mask", "audio_mask"]
OUTPUT_NAMES = ["logits", "text_logits", "audio_logits"]


OPSET = 18
LAST_ROW_SUFFIX = "-last-row"  # of a last-row graph's name in the cache
EXPORT_VERSION = 1  # bump when export_lpgnet changes what it writes: cached graphs are then re-exported


class _LastRows(torch.nn.Module):
    """An LPGNet whose outputs are each window's last row only (`LPGNet.forward(last_only=True)`)."""

    def __init__(self, model: LPGNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, text_mask: torch.Tensor, audio_mask: torch.Tensor
    ) -> LPGNetOutput:
        out: LPGNetOutput = self.model(text, audio, text_mask, audio_mask, last_only=True)
        return out


def export_lpgnet(model: LPGNet, path: str | Path, opset: int = OPSET, *, last_only: bool = False) -> Path:
    """Write `model` (put in eval mode) as an ONNX graph with dynamic batch and utterance axes;
    `last_only`: its last-row pass (outputs (B, 1, C): each window's last row, the service's answer)."""
    model = model.eval()
    cfg = model.cfg
    b, u = 2, 5  # example sizes; both axes are exported as dynamic
    example = (
        torch.randn(b, u, cfg.text_dim),
        torch.randn(b, u, cfg.audio_dim),
        torch.ones(b, u, dtype=torch.bool),
        torch.ones(b, u, dtype=torch.bool),
    )
    batch, utts = torch.export.Dim("batch", max=4096), torch.export.Dim("utterances", max=4096)
    dyn = {name: {0: batch, 1: utts} for name in INPUT_NAMES}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        program = _export(_LastRows(model) if last_only else model, example, dyn, opset)
        assert program is not None
        program.save(str(path))
    return path


def _export(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], dyn: dict[str, Any], opset: int
) -> Any:
    return torch.onnx.export(
        model,
        example,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_shapes=dyn,
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )


# the libraries whose records an export floods the log with (pass-by-pass INFO, op notices)
EXPORTER_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx",
    "onnxscript",
    "onnx_ir",
)


class _ExporterChatter(logging.Filter):
    """Drops the exporter libraries' records below ERROR; every other logger's pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.name.startswith(EXPORTER_LOGGERS)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the dynamo exporter's chatter out of the service's log while it runs (~10 s, once per
    checkpoint, during start-up).

    The exporter resets its libraries' logger levels itself, so levels cannot do it: a filter on the
    root logger's handlers drops those libraries' records below ERROR, and only theirs (the service's
    own records, from any thread, still log). Errors still log and raise.
    """
    chatter = _ExporterChatter()
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(chatter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for h in handlers:
            h.removeFilter(chatter)


def check_graph_parity(
    model: LPGNet, path: str | Path, *, tol: float = 1e-3, seed: int = 0, last_only: bool = False
) -> float:
    """Run `model` and the graph at `path` on one random padded batch; raise unless logits agree.

    Inputs are drawn from the model's own input statistics (its `InputNorm` buffers), so they look
    like real features; two dialogues of different lengths with missing modalities exercise padding
    and masks. Agreement: |onnx - torch| <= tol * (1 + |torch|) on every valid row. Returns the
    largest absolute difference. `last_only`: the graph is a last-row one, checked against those rows
    of the module's full pass.
    """
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    b, u = 2, 7

    def features(norm: Any, dim: int) -> torch.Tensor:
        return norm.mean + norm.std * torch.randn(b, u, dim, generator=g)

    text, audio = features(model.text_norm, cfg.text_dim), features(model.audio_norm, cfg.audio_dim)
    text_mask = torch.rand(b, u, generator=g) > 0.2
    audio_mask = torch.rand(b, u, generator=g) > 0.2
    text_mask[1, 4:] = audio_mask[1, 4:] = False  # dialogue 2 is 4 utterances long
    valid = (text_mask | audio_mask).unsqueeze(-1)  # (B, U, 1): rows whose logits mean something
    with torch.inference_mode():
        expected = model.eval()(text, audio, text_mask, audio_mask).logits
    got = OnnxLPGNet(path, device="cpu", intra_op_threads=1)(text, audio, text_mask, audio_mask).logits
    if last_only:
        ends = last_rows(text_mask, audio_mask)
        expected, valid = take_rows(expected, ends), take_rows(valid, ends)
    gap = torch.where(valid, (got - expected).abs(), 0.0)  # padded rows may hold anything, NaN too
    excess = torch.where(valid, gap - tol * (1 + expected.abs()), 0.0)
    diff = float(gap.max())
    if not float(excess.max()) <= 0:  # NaN in a valid row fails too
        raise ValueError(f"{Path(path).name}: onnxruntime logits differ from PyTorch by up to {diff:.3g}")
    return diff


def export_lpgnet_cached(
    model: LPGNet, cache_dir: str | Path, *, refresh: bool = False, last_only: bool = False
) -> Path:
    """Export `model`'s ONNX graph into `cache_dir` unless it is there already; return its path.

    The cache key hashes the config, every weight and buffer, the exporter (torch version, opset,
    `EXPORT_VERSION`) and onnxruntime's version, so a retrained checkpoint or an upgrade gets a new
    graph. A new graph must pass `check_graph_parity` before it is moved into place atomically
    (concurrent starts may export twice, never read half a file). ~10 s on 2 cores. Callers should
    still check a cached graph before serving it: the file may have been replaced since; `refresh`
    exports it again over whatever is there. `last_only`: the last-row graph (`export_lpgnet`), named
    as the full one with `LAST_ROW_SUFFIX`, so a checkpoint's two graphs sit side by side.
    """
    import onnxruntime

    digest = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    digest.update(f"{EXPORT_VERSION}/{OPSET}/{torch.__version__}/{onnxruntime.__version__}".encode())
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    cache = Path(cache_dir)
    path = cache / f"lpgnet-{digest.hexdigest()[:24]}{LAST_ROW_SUFFIX if last_only else ''}.onnx"
    if path.is_file() and not refresh:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=cache, prefix=f".{path.stem}.", suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        log.info("exporting LPGNet to %s (once per checkpoint)", path)
        export_lpgnet(model, tmp, last_only=last_only)
        check_graph_parity(model, tmp, last_only=last_only)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep other users (a shared cache, the image) out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxLPGNet:
    """LPGNet run by onnxruntime; call it like the PyTorch module (tensors or arrays in)."""

    def __init__(self, path: str | Path, device: str = "auto", intra_op_threads: int | None = None) -> None:
        self.session = create_session(path, device=device, intra_op_threads=intra_op_threads)
        log.debug("LPGNet ONNX session on %s", self.session.get_providers()[0])

    def __call__(
        self,
        text: torch.Tensor | np.ndarray,
        audio: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray,
        audio_mask: torch.Tensor | np.ndarray,
    ) -> LPGNetOutput:
        feeds = {
            "text": np.asarray(text, dtype=np.float32),
            "audio": np.asarray(audio, dtype=np.float32),
            "text_mask": np.asarray(text_mask, dtype=bool),
            "audio_mask": np.asarray(audio_mask, dtype=bool),
        }
        outs = self.session.run(OUTPUT_NAMES, feeds)
        return LPGNetOutput(*(torch.from_numpy(o) for o in outs))


# ---- the bundle: every graph a checkpoint needs, and a manifest the service loads ----

LPGNET_GRAPH = "lpgnet.onnx"
LAST_ROW_GRAPH = "lpgnet-last-row.onnx"  # its last-row pass (`export_lpgnet(last_only=True)`), what serves
TEXT_ONLY_GRAPH = "lpgnet-text-only.onnx"  # a checkpoint's text-only network (`Checkpoint.text_only`)
CHAT_TEXT_GRAPH = "lpgnet-chat-text.onnx"  # its chat text network beside it (`Checkpoint.chat_text`)
TEXT_GRAPHS = dict(zip(TEXT_NETWORKS, (TEXT_ONLY_GRAPH, CHAT_TEXT_GRAPH), strict=True))  # by network


def export_bundle(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
) -> Path:
    """Export LPGNet and the checkpoint's encoders to `out_dir`, with `manifest.json`.

    Encoders with a neural network (HF text, emotion2vec) become ONNX graphs; feature extractors
    computed in numpy/librosa (prosody-8, eGeMAPS) are recorded as "native" and built as usual.
    The encoders are the checkpoint's (`model.encoders.factory.checkpoint_encoders`: its profile, its
    modalities, specs checked), in fp32 on CPU.
    """
    from model.checkpoint import load_checkpoint
    from model.encoders.emotion2vec import Emotion2VecEncoder
    from model.encoders.factory import checkpoint_encoders
    from model.encoders.onnx import export_emotion2vec, export_text_encoder
    from model.encoders.profiles import resolve_profile
    from model.encoders.text import HFTextEncoder

    ckpt = load_checkpoint(checkpoint_path)
    kw: dict[str, Any] = dict(text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir)
    encoders = checkpoint_encoders(ckpt.encoders, ckpt.profile, device="cpu", precision="fp32", **kw)
    profile = resolve_profile(ckpt.profile, **kw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_lpgnet(ckpt.model, out / LPGNET_GRAPH)
    export_lpgnet(ckpt.model, out / LAST_ROW_GRAPH, last_only=True)
    for name, network in ckpt.text_networks().items():
        export_lpgnet(network, out / TEXT_GRAPHS[name])
    entries: dict[str, dict[str, Any]] = {}
    for modality, encoder in encoders.items():
        entry: dict[str, Any] = {"spec": encoder.spec.to_dict()}
        if isinstance(encoder, HFTextEncoder):
            export_text_encoder(encoder, out / modality)
            entry.update(backend="onnx", dir=modality)
        elif isinstance(encoder, Emotion2VecEncoder):
            export_emotion2vec(encoder, out / modality)
            entry.update(backend="onnx", dir=modality)
        else:
            config = profile.audio if modality == "audio" else profile.text
            entry.update(backend="native", kind=getattr(config, "kind", None))
        entries[modality] = entry
    manifest = {
        "format_version": 1,
        "checkpoint": {
            "name": ckpt.name,
            "version": ckpt.version,
            "profile": ckpt.profile,
            "labels": ckpt.labels,
            "context": ckpt.context,
        },
        "lpgnet": LPGNET_GRAPH,
        "lpgnet_last_row": LAST_ROW_GRAPH,
        **{name: TEXT_GRAPHS[name] if name in ckpt.text_networks() else None for name in TEXT_GRAPHS},
        "encoders": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out
