"""What a checkpoint needs to serve, decided in one place: its encoders, its network and the backend
that runs it (`load_runtime`). The engine calls it at start; nothing else in the service builds encoders
or networks.

Encoders: `model.encoders.factory.checkpoint_encoders`, the function `lpgnet evaluate` and `lpgnet export`
call too, given the checkpoint's profile (or LPGNET_PROFILE) with local-directory overrides, or the
graphs of an `lpgnet export` bundle; their specs must match the checkpoint's. Network: the PyTorch
module, or its ONNX graph in onnxruntime (exported once into the cache, parity-checked at every start).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.ids import ID_MAX_CHARS
from app.metrics import STAGES
from app.predictions import Prediction
from app.schemas import MAX_SPEAKER_CHARS, MAX_TRANSCRIPT_CHARS
from app.settings import Settings
from app.store import ConversationKey, ConversationStore, MemoryStore
from app.store.base import NewUtterance, UtteranceMeta
from model.checkpoint import Checkpoint, load_checkpoint
from model.encoders.base import Encoder, EncoderMismatchError
from model.encoders.devices import count_available_cpus, resolve_device
from model.encoders.factory import MANIFEST, checkpoint_encoders
from model.lpgnet import LPGNet
from model.serving import LastRowNetwork, Network

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The engine cannot serve with this configuration; the message says what to change."""


@dataclass(frozen=True)
class Runtime:
    checkpoint: Checkpoint
    encoders: dict[str, Encoder]  # modality -> encoder, the checkpoint's modalities only
    network: Network
    backend: str  # what runs LPGNet: "torch" or "onnx" ("<fused>/<text-only>[/<chat text>]" when they differ)
    device: torch.device
    profile: str


def load_runtime(settings: Settings) -> Runtime:
    """Load the checkpoint, its encoders and its network (blocking); `StartupError` says what to change."""
    path = Path(settings.checkpoint)
    if not path.is_file():
        raise StartupError(f"LPGNET_CHECKPOINT: no checkpoint file at {path}")
    device = resolve_device(settings.device)
    checkpoint = load_checkpoint(path)
    profile = settings.profile or checkpoint.profile
    encoders = _served_encoders(settings, checkpoint, profile)
    if checkpoint.context != "causal":
        log.warning("checkpoint context is %r; served over past utterances only", checkpoint.context)
    if settings.context_window != checkpoint.serving.window:
        log.warning(
            "LPGNET_CONTEXT_WINDOW=%d but %s was selected and evaluated with K=%d: answers differ from "
            "`lpgnet evaluate` unless it is run with --window %d",
            settings.context_window,
            checkpoint.name,
            checkpoint.serving.window,
            settings.context_window,
        )
    network, backend = build_network(settings, checkpoint, device)
    log.info(
        "runtime: %s %s, labels %s, profile %s, LPGNet on %s (%s), K=%d",
        checkpoint.name,
        checkpoint.version,
        checkpoint.labels,
        profile,
        backend,
        device,
        settings.context_window,
    )
    return Runtime(checkpoint, encoders, network, backend, device, profile)


def require_store_room(store: ConversationStore, runtime: Runtime, settings: Settings) -> None:
    """`StartupError` unless the in-memory store's byte bound holds one conversation at its bounds.

    At its bounds a conversation holds LPGNET_MAX_UTTERANCES_STORED utterances, each with the longest
    ids, speaker and (with LPGNET_STORE_TRANSCRIPTS) transcript the API accepts, all in 4-byte
    characters, and the longest answer this checkpoint can encode, plus vectors of the last
    `vectors_kept`. A smaller bound would, some day, have to evict the conversation being written.
    Redis is bounded by its own maxmemory: nothing to check here.
    """
    if not isinstance(store, MemoryStore) or store.max_bytes is None:
        return
    widest = chr(0x10FFFF)  # 4 bytes a character in a str
    meta = UtteranceMeta(
        token="t" * 32,
        utterance_id="u" * ID_MAX_CHARS,
        content_hash=hashlib.sha256().hexdigest(),
        created_at=time.time(),
        modalities=tuple(sorted(runtime.encoders)),
        speaker=widest * MAX_SPEAKER_CHARS,
        transcript=widest * MAX_TRANSCRIPT_CHARS if settings.store_transcripts else None,
        transcript_truncated=True,
    )
    dims = {modality: encoder.spec.dim for modality, encoder in runtime.encoders.items()}
    text, audio = (np.zeros(dims[m], np.float32) if m in dims else None for m in ("text", "audio"))
    labels = runtime.checkpoint.labels
    answer = Prediction(  # every number at its longest repr
        emotion=max(labels, key=len),
        probabilities=dict.fromkeys(labels, 2.2250738585072014e-308),
        modalities=meta.modalities,
        transcript_truncated=True,
        context_size=settings.context_window,
        model_name=runtime.checkpoint.name,
        model_version=runtime.checkpoint.version,
        timings_ms=dict.fromkeys(STAGES, 99_999_999.999),
    )
    key = ConversationKey("n" * ID_MAX_CHARS, "c" * ID_MAX_CHARS)
    needed = store.bytes_at_bounds(key, NewUtterance(meta, text, audio), answer)
    if needed > store.max_bytes:
        raise StartupError(
            f"LPGNET_MAX_STORE_BYTES={store.max_bytes} cannot hold one conversation at its bounds: "
            f"{needed} bytes for LPGNET_MAX_UTTERANCES_STORED={settings.max_utterances_stored} utterances "
            f"with vectors of the last {store.vectors_kept} ({dims}), transcripts "
            f"{'kept' if settings.store_transcripts else 'not kept'}; raise it to at least {needed} or "
            "lower LPGNET_MAX_UTTERANCES_STORED"
        )


def _served_encoders(settings: Settings, checkpoint: Checkpoint, profile: str) -> dict[str, Encoder]:
    """The checkpoint's encoders as the settings configure them (`checkpoint_encoders`): the graphs of
    the bundle LPGNET_ONNX_MODEL names (backend onnx or auto), else `profile` with the local-directory
    overrides; a failure or a spec mismatch is a `StartupError`."""
    bundle = onnx_bundle(settings)
    try:
        return checkpoint_encoders(
            checkpoint.encoders,
            profile,
            device=settings.device,
            precision=settings.encoder_precision,
            backend=settings.encoder_backend,
            cache_dir=settings.graph_cache,
            bundle=bundle,
            intra_op_threads=_encoder_threads(settings, bundle),
            text_model=None if settings.text_model is None else str(settings.text_model),
            audio_model=None if settings.audio_model is None else str(settings.audio_model),
            tiny_dir=settings.tiny_dir,
            voice=None if checkpoint.voice is None else checkpoint.voice.spec,
        )
    except EncoderMismatchError as exc:
        raise StartupError(f"{Path(settings.checkpoint).name}: {exc}") from exc
    except (KeyError, ValueError, ImportError) as exc:  # ImportError: openSMILE for a voice expert
        source = f"the bundle {bundle}" if bundle is not None else f"profile {profile!r}"
        raise StartupError(f"cannot build the encoders of {source}: {exc}") from exc


def _encoder_threads(settings: Settings, bundle: Path | None) -> int | tuple[int, ...] | None:
    """onnxruntime sessions per encoder graph: LPGNET_ONNX_THREADS if set; a bundle's, half the CPUs
    each (`create_session`); otherwise the core budget's two counts (`app.workers`): one thread for a
    call with company, every CPU for a lone one (or LPGNET_TORCH_THREADS, fixed)."""
    if settings.onnx_threads is not None or bundle is not None:
        return settings.onnx_threads
    if settings.torch_threads is not None:
        return settings.torch_threads
    return (1, count_available_cpus()) if settings.adaptive_threads else 1


def onnx_bundle(settings: Settings) -> Path | None:
    """The `lpgnet export` directory to serve from, when LPGNET_ONNX_MODEL names one (backend not torch)."""
    path = settings.onnx_model
    if settings.backend == "torch" or path is None or not (Path(path) / MANIFEST).is_file():
        return None
    return Path(path)


def build_network(settings: Settings, checkpoint: Checkpoint, device: torch.device) -> tuple[Network, str]:
    """The LPGNet runtime and its name ("torch" or "onnx"; when the checkpoint's networks do not all run on
    one runtime, each network's in order, "<fused>/<text-only>[/<chat text>]", e.g. "onnx/torch").

    torch: the checkpoint's module. onnx: its graph in onnxruntime (a bundle's, LPGNET_ONNX_MODEL, or
    the .onnx beside the checkpoint). auto, on CPU: the graph LPGNET_ONNX_MODEL names, else one
    exported from the checkpoint into the cache once (faster than PyTorch at 64 utterances on 2 cores,
    bench/RESULTS.md); PyTorch when exporting fails, and on CUDA. The main network also gets its last-row
    pass (`model.serving.LastRowNetwork`: the one row a request asks for, 35-55 % less time at 64
    utterances): the module's own in PyTorch, else a second graph (the bundle's as its manifest names it,
    or the cache's; a single graph named by LPGNET_ONNX_MODEL or <checkpoint>.onnx, or a bundle from
    before, serves every row). Every graph is checked against the checkpoint's
    module on a random batch before it serves; a named graph that fails is a start-up error. A
    checkpoint's text networks (text-only, chat text) are served the same way (each graph: a bundle's,
    else the cache's); all are composed by `model.serving.served_network` (the contract's audio pool, the
    text networks routed in for the rows that depend on no audio), exactly as `lpgnet evaluate`
    composes them.
    """
    from model.serving import served_network

    network, backend = _served(
        settings, checkpoint.model, checkpoint.name, device, _named_graph(settings), last_row=True
    )
    causal = checkpoint.context == "causal"
    text: dict[str, Network] = {}
    backends = [backend]
    for name, module in checkpoint.text_networks().items():
        graph = _named_text_graph(settings, name)
        if graph is not None and not graph.is_file() and settings.backend == "auto":
            log.warning("the bundle has no %s (an older export): its graph goes to the cache", graph.name)
            graph = None
        what = f"{checkpoint.name} ({name.replace('_', ' ')})"
        text[name], text_backend = _served(settings, module, what, device, graph)
        backends.append(text_backend)
    served = served_network(
        network,
        text.get("text_only"),
        checkpoint.serving,
        causal=causal,
        chat_text=text.get("chat_text"),
        voice=checkpoint.voice,
        audio_dim=checkpoint.config.audio_dim,
    )
    return served, backend if len(set(backends)) == 1 else "/".join(backends)


def _served(
    settings: Settings,
    module: LPGNet,
    name: str,
    device: torch.device,
    path: Path | None,
    *,
    last_row: bool = False,
) -> tuple[Network, str]:
    """One LPGNet module served by `settings.backend` (see `build_network`); `path`: its named graph.
    `last_row`: with its last-row pass too (`LastRowNetwork`)."""
    auto = settings.backend == "auto"
    if settings.backend == "torch" or (auto and device.type != "cpu"):
        return _torch_network(module, device), "torch"
    from model.export import OnnxLPGNet

    if path is None:  # without a graph of its own: export the module once
        try:
            path = _cached_graph(settings, module)
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: serve PyTorch
            if not auto:
                raise StartupError(f"no ONNX graph of {name} could be exported: {exc}") from exc
            log.warning("LPGNet stays in PyTorch: no usable ONNX graph in %s: %s", settings.graph_cache, exc)
            return _torch_network(module, device), "torch"
        last_path = _cached_last_row_graph(settings, module) if last_row else None
    else:
        _check_named_graph(module, name, path)
        bundle = onnx_bundle(settings)
        last_path = _bundle_last_row_graph(bundle) if last_row and bundle is not None else None
        if last_path is not None:
            _check_named_graph(module, name, last_path, last_only=True)
    # one intra-op thread per model thread on CPU, like torch (LPGNET_ONNX_THREADS overrides)
    threads = settings.onnx_threads or (settings.torch_threads or 1 if device.type == "cpu" else None)
    runner = OnnxLPGNet(path, device=settings.device, intra_op_threads=threads)
    rows: Network = lambda t, a, tm, am: runner(t, a, tm, am).logits  # noqa: E731
    if last_path is None:
        return rows, "onnx"
    last_runner = OnnxLPGNet(last_path, device=settings.device, intra_op_threads=threads)
    return LastRowNetwork(rows, lambda t, a, tm, am: last_runner(t, a, tm, am).logits), "onnx"


def _bundle_last_row_graph(bundle: Path) -> Path | None:
    """The last-row graph an `lpgnet export` bundle's manifest names; None: an older bundle without one."""
    name = json.loads((bundle / MANIFEST).read_text()).get("lpgnet_last_row")
    if name is None:
        log.info("the bundle %s has no last-row graph (an older export): every row is computed", bundle)
        return None
    return bundle / name


def _cached_graph(settings: Settings, module: LPGNet, *, last_only: bool = False) -> Path:
    """The module's graph in the cache, exported there once and checked before it serves."""
    from model.export import check_graph_parity, export_lpgnet_cached

    path = export_lpgnet_cached(module, settings.graph_cache, last_only=last_only)
    try:
        check_graph_parity(module, path, last_only=last_only)
    except ValueError as exc:  # the file changed since it was written (its name is its content)
        log.warning("re-exporting %s: %s", path.name, exc)
        path = export_lpgnet_cached(module, settings.graph_cache, refresh=True, last_only=last_only)
    return path


def _cached_last_row_graph(settings: Settings, module: LPGNet) -> Path | None:
    """The module's last-row graph from the cache; None (every row computed) when it cannot be had."""
    try:
        return _cached_graph(settings, module, last_only=True)
    except Exception as exc:  # noqa: BLE001 - the full graph serves alone: slower, never wrong
        log.warning("no last-row ONNX graph of LPGNet (every row is computed): %s", exc)
        return None


def _check_named_graph(module: LPGNet, name: str, path: Path, *, last_only: bool = False) -> None:
    from model.export import check_graph_parity

    if not path.is_file():
        raise StartupError(
            f"no ONNX graph at {path}; write one with `lpgnet export --out DIR` and set LPGNET_ONNX_MODEL=DIR"
        )
    try:
        check_graph_parity(module, path, last_only=last_only)
    except Exception as exc:
        raise StartupError(f"the ONNX graph {path} does not serve {name}: {exc}") from exc


def _named_graph(settings: Settings) -> Path | None:
    """The LPGNet graph the settings name: a bundle's or LPGNET_ONNX_MODEL's; for backend=onnx
    without one, <checkpoint>.onnx. None: auto with nothing named (the cache decides)."""
    from model.export import LPGNET_GRAPH

    bundle = onnx_bundle(settings)
    if bundle is not None:
        return bundle / LPGNET_GRAPH
    if settings.onnx_model is not None:
        return Path(settings.onnx_model)
    if settings.backend == "onnx":
        return Path(settings.checkpoint).with_suffix(".onnx")
    return None


def _named_text_graph(settings: Settings, name: str) -> Path | None:
    """The graph a bundle holds for the text network `name` (`Checkpoint.text_networks`); None: the
    cache decides (LPGNET_ONNX_MODEL and <checkpoint>.onnx name the main network's graph only)."""
    from model.export import TEXT_GRAPHS

    bundle = onnx_bundle(settings)
    return bundle / TEXT_GRAPHS[name] if bundle is not None else None


def _torch_network(module: LPGNet, device: torch.device) -> Network:
    """The module on `device`, with its last-row pass (`LastRowNetwork`)."""
    module = module.to(device).eval()

    def pass_(last_only: bool) -> Network:
        @torch.inference_mode()
        def run(
            text: torch.Tensor, audio: torch.Tensor, text_mask: torch.Tensor, audio_mask: torch.Tensor
        ) -> torch.Tensor:
            inputs = (text.to(device), audio.to(device), text_mask.to(device), audio_mask.to(device))
            return module(*inputs, last_only=last_only).logits.float().cpu()

        return run

    return LastRowNetwork(pass_(False), pass_(True))


__all__ = [
    "Runtime",
    "StartupError",
    "build_network",
    "load_runtime",
    "onnx_bundle",
    "require_store_room",
]
