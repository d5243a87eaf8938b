"""The setup of a run: the checkpoints served, the service's settings and the in-process engine.

What each entry gives:

    prepare_served   the served model (production-size random encoders, or tiny for smoke) and the
                     offline-profile model, written once and cached under `BenchOptions.cache`
    service_settings the service's configuration, for the uvicorn process and the in-process engine
    load_engine      `Engine.load` + start + warm-up, as the app's lifespan does it
    torch_encoders   the served profile's PyTorch encoders, which the floor's candidates start from
    encoder_dirs     the text and audio model directories of a served profile (for the naive pipeline)
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models import write_base_encoders, write_checkpoint
from bench.options import CONTEXT_WINDOW, BenchOptions
from model.paths import write_once

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Served:
    """A checkpoint and the encoder profile (with local model directories) that serve it."""

    profile: str
    overrides: dict[str, str]  # text_model / audio_model / tiny_dir
    checkpoint: Path
    onnx_model: Path | None = None  # backend onnx: an `lpgnet export` bundle (network + encoder graphs)


def prepare_served(opts: BenchOptions) -> tuple[Served, Served]:
    """The served model (production-size, or tiny for smoke) and the offline-profile model."""
    cache = opts.cache
    if opts.kind == "smoke":
        from model.encoders.tiny import write_tiny_encoders

        tiny = cache / "tiny"
        write_tiny_encoders(tiny)
        main = _served(
            "tiny", {"tiny_dir": str(tiny)}, cache / "checkpoints" / "tiny.pt", hidden=16, opts=opts
        )
    else:
        text, audio = write_base_encoders(cache)
        overrides = {"text_model": str(text), "audio_model": str(audio)}
        main = _served(
            "production",
            overrides,
            cache / "checkpoints" / f"production-d{opts.hidden}.pt",
            hidden=opts.hidden,
            opts=opts,
        )
    from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

    if DEFAULT_CHECKPOINT.is_file():  # the embedded default on its own profile (offline-tuned)
        offline = Served(load_checkpoint(DEFAULT_CHECKPOINT).profile, {}, DEFAULT_CHECKPOINT)
    else:
        offline = _served("offline", {}, cache / "checkpoints" / "offline.pt", hidden=128, opts=opts)
    return main, offline


def export_graphs(served: Served, opts: BenchOptions) -> None:
    """Export (and quantise) the served encoders' onnxruntime graphs into the service's graph cache,
    once, here: the service process, the in-process engine and the floor then all find them, instead of
    exporting the same production-size graphs side by side at start (minutes of CPU). No-op on CUDA."""
    if opts.device != "cpu":
        return
    from model.checkpoint import load_checkpoint
    from model.encoders.factory import checkpoint_encoders

    checkpoint = load_checkpoint(served.checkpoint)
    checkpoint_encoders(
        checkpoint.encoders,
        served.profile,
        device="cpu",
        precision=opts.precision or "auto",
        backend="auto",
        cache_dir=graph_cache(opts),
        text_model=served.overrides.get("text_model"),
        audio_model=served.overrides.get("audio_model"),
        tiny_dir=served.overrides.get("tiny_dir"),
    )


def graph_cache(opts: BenchOptions) -> Path:
    """Where the service (LPGNET_CACHE_DIR) and the floor keep exported graphs."""
    return opts.cache / "graphs"


def _served(
    profile: str, overrides: dict[str, str], path: Path, *, hidden: int, opts: BenchOptions
) -> Served:
    specs = _cached_specs(profile, overrides, opts.cache)
    write_checkpoint(path, specs, profile, hidden=hidden, onnx=opts.backend == "onnx")
    bundle = _onnx_bundle(path, overrides, opts.cache) if opts.backend == "onnx" else None
    return Served(profile, overrides, path, bundle)


def _onnx_bundle(checkpoint: Path, overrides: dict[str, str], cache: Path) -> Path | None:
    """The checkpoint's `lpgnet export` bundle, written once per checkpoint version.

    None where `model.export` cannot write one: then only LPGNet runs in onnxruntime (from the .onnx
    beside the checkpoint) and the encoders stay in PyTorch.
    """
    from model import export
    from model.checkpoint import load_checkpoint

    export_bundle = getattr(export, "export_bundle", None)
    manifest = getattr(export, "MANIFEST", None)
    if export_bundle is None or manifest is None:
        return None
    target = cache / "bundles" / f"{checkpoint.stem}-{load_checkpoint(checkpoint).version}"
    if not (target / manifest).is_file():
        log.info("exporting the ONNX bundle of %s (once)", checkpoint.name)
    return write_once(target, manifest, lambda out: export_bundle(checkpoint, out, **overrides))


def _cached_specs(
    profile: str, overrides: dict[str, str], cache: Path, *, refresh: bool = False
) -> dict[str, Any]:
    """The encoder specs of a profile; building encoders to learn them costs seconds, so they are cached."""
    from model.encoders.base import EncoderSpec
    from model.encoders.identity import short_hash
    from model.encoders.profiles import profile_specs

    stamps = {k: Path(v).stat().st_mtime_ns for k, v in overrides.items() if Path(v).exists()}
    path = cache / "specs" / f"{profile}-{short_hash({'overrides': overrides, 'stamps': stamps})}.json"
    if path.is_file() and not refresh:
        return {m: EncoderSpec.from_dict(d) for m, d in json.loads(path.read_text()).items()}
    specs = profile_specs(profile, device="cpu", **overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({m: s.to_dict() for m, s in specs.items()}, indent=2))
    return specs


def service_settings(served: Served, opts: BenchOptions) -> dict[str, Any]:
    """The service's configuration, as Settings field names (LPGNET_<NAME> for the process)."""
    settings: dict[str, Any] = {
        "checkpoint": str(served.checkpoint),
        "profile": served.profile,
        **served.overrides,
        "backend": opts.backend,
        "device": opts.device,
        "torch_threads": opts.threads,
        "context_window": CONTEXT_WINDOW,
        "cache_dir": str(graph_cache(opts)),
        "log_level": "warning",
    }
    if opts.precision is not None:
        settings["encoder_precision"] = opts.precision
    if opts.workers is not None:
        settings["encoder_workers"] = opts.workers
    if served.onnx_model is not None:
        settings["onnx_model"] = str(served.onnx_model)
        if "onnx_threads" in _settings_fields():
            settings["onnx_threads"] = opts.threads
    if opts.batch_max_size is not None:
        settings["batch_max_size"] = opts.batch_max_size
    if opts.batch_max_wait_ms is not None:
        settings["batch_max_wait_ms"] = opts.batch_max_wait_ms
    return settings


def _settings_fields() -> set[str]:
    from app.settings import Settings

    return set(Settings.model_fields)


def _settings(values: dict[str, Any]) -> Any:
    """`app.settings.Settings` from these values only (the bench's own LPGNET_* env is not read)."""
    from app.settings import Settings

    class BenchSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: Any, init_settings: Any, *args: Any, **kwargs: Any
        ) -> Any:
            return (init_settings,)

    return BenchSettings(**{k: v for k, v in values.items() if v is not None})


async def load_engine(served: Served, opts: BenchOptions) -> Any:
    """`Engine.load` + start + warm-up, exactly as the app's lifespan does it."""
    from app.engine import Engine
    from app.metrics import Metrics
    from app.runtime import StartupError
    from app.store import build_store

    values = service_settings(served, opts)
    graph = served.onnx_model or served.checkpoint.with_suffix(".onnx")
    if opts.backend == "onnx" and not graph.exists():
        values["backend"] = "torch"  # a shipped checkpoint without its ONNX graph
    settings = _settings(values)
    store = build_store(settings)
    try:
        engine = await asyncio.to_thread(Engine.load, settings, store, Metrics())
    except StartupError as exc:
        if "does not match" not in str(exc) or not served.checkpoint.is_relative_to(opts.cache):
            raise  # never rewrite a checkpoint the bench did not write
        # the cached specs are stale (the encoders' identity changed): learn them again and retry
        log.info("encoder specs changed; rewriting %s", served.checkpoint.name)
        await asyncio.to_thread(_refresh_checkpoint, served, opts)
        engine = await asyncio.to_thread(Engine.load, settings, store, Metrics())
    engine.start()
    await engine.warm_up()
    return engine


def _refresh_checkpoint(served: Served, opts: BenchOptions) -> None:
    from model.checkpoint import load_checkpoint

    specs = _cached_specs(served.profile, served.overrides, opts.cache, refresh=True)
    hidden = load_checkpoint(served.checkpoint).config.hidden
    write_checkpoint(served.checkpoint, specs, served.profile, hidden=hidden, onnx=opts.backend == "onnx")


async def close_engine(engine: Any) -> None:
    await engine.close()
    await engine.store.close()


def torch_encoders(engine: Any, served: Served) -> dict[str, Any]:
    """The served profile's PyTorch encoders (the floor's candidates start from them).

    The engine's own where it runs PyTorch ones (they share the weights); built in fp32 from the same
    directories where it serves ONNX graphs (backend onnx).
    """
    encoders = dict(engine.encoders)
    if all(hasattr(e, "pooler") for e in encoders.values()):
        return encoders
    from model.encoders.profiles import build_encoders

    built = build_encoders(served.profile, device="cpu", precision="fp32", **served.overrides)
    return {modality: encoder for modality, encoder in built.items()}


def encoder_dirs(served: Served) -> tuple[Path, Path]:
    """The text and audio model directories of the served profile (for the naive pipeline)."""
    if "tiny_dir" in served.overrides:
        from model.encoders.tiny import AUDIO_DIRNAME, TEXT_DIRNAME

        root = Path(served.overrides["tiny_dir"])
        return root / TEXT_DIRNAME, root / AUDIO_DIRNAME
    return Path(served.overrides["text_model"]), Path(served.overrides["audio_model"])
