"""The encoders that serve a checkpoint, built and checked in one place: `checkpoint_encoders`.

The service (`app.runtime.load_runtime`), `lpgnet evaluate` (`model.evaluate.predict_checkpoint`) and
`lpgnet export` (`model.export.export_bundle`) all call it, so a checkpoint is never served, scored or
exported with other encoders than the ones it records. The encoders come from an encoder profile
(`model.encoders.profiles.build_encoders`, with per-modality local-directory overrides) or from the
graphs of an `lpgnet export` bundle (`load_bundle_encoders`); only the checkpoint's modalities are kept,
and their specs must match the recorded ones (`EncoderMismatchError` otherwise).

Backend (`EncoderBackend`): "torch" serves the profile's PyTorch encoders as built; "onnx" and "auto"
serve each exportable one (the transformers: text BERT/MiniLM, emotion2vec) as its onnxruntime graph,
exported once into `cache_dir` and quantised to int8 where the precision allows, but only after its
vectors match the PyTorch fp32 ones on fixed probes (`onnx_served`). "auto" does so on CPU only, and
keeps PyTorch for an encoder whose graph cannot be built or fails parity; "onnx" makes that an error.
Once exported, a graph is found by the checkpoint's recorded spec and checked against the probe vectors
stored beside it (`cached_onnx_served`), so a warm start builds no PyTorch encoder: the spec's version
fingerprints the weights, and the graph serves exactly the weights the checkpoint was trained on
(a local-directory override is then not read).
Extractors (prosody, eGeMAPS) are numpy either way. On the machines measured, onnxruntime int8 is the
fastest batch-1 candidate for both transformers (bench/RESULTS.md, the floor's candidate table).

`build_encoders` is called directly only where there is no checkpoint yet: `lpgnet train` builds its
profile's encoders and records their specs in the checkpoint it writes, and `profiles.profile_specs`
learns a profile's specs (the benchmark writes random checkpoints with them).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from model.encoders.base import Encoder, EncoderMismatchError, EncoderSpec, check_encoders_match
from model.encoders.devices import resolve_device
from model.encoders.precision import Precision

log = logging.getLogger(__name__)

EncoderBackend = Literal["auto", "torch", "onnx"]
ENCODER_BACKENDS: tuple[EncoderBackend, ...] = ("auto", "torch", "onnx")
MANIFEST = "manifest.json"  # what `lpgnet export` writes into a bundle: graphs, specs, checkpoint


def checkpoint_encoders(
    recorded: Mapping[str, EncoderSpec],
    profile: str,
    *,
    device: str,
    precision: Precision,
    backend: EncoderBackend = "torch",
    cache_dir: str | Path | None = None,
    bundle: str | Path | None = None,
    intra_op_threads: int | Sequence[int] | None = None,
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
    voice: EncoderSpec | None = None,
) -> dict[str, Encoder]:
    """The encoders of the modalities a checkpoint records (`recorded`: modality -> spec), checked; with
    `voice` (the spec of a voice expert's features, `Checkpoint.voice`), the audio encoder followed by
    that extractor's (`model.encoders.voiced`).

    With `bundle` (an `lpgnet export` directory): its graphs in onnxruntime (`intra_op_threads` each)
    and native extractors for numpy features; the profile and overrides are not used. Otherwise the
    profile's encoders with the local-directory overrides, served by `backend` (module doc; graphs in
    `cache_dir`, one onnxruntime session per count of `intra_op_threads`) at `precision`. Raises
    `EncoderMismatchError` when a spec differs, `KeyError` / `ValueError` when they cannot be built.
    """
    if bundle is not None:
        built = load_bundle_encoders(bundle, device=device, intra_op_threads=intra_op_threads)
        source = f"the encoders of the bundle {Path(bundle).name}"
    else:
        from model.encoders.profiles import build_encoders  # heavy: transformers, funasr

        if backend not in ENCODER_BACKENDS:
            raise ValueError(f"encoder backend must be one of {ENCODER_BACKENDS}, got {backend!r}")
        onnx = backend == "onnx" or (backend == "auto" and resolve_device(device).type == "cpu")
        if onnx and precision == "bf16":
            if backend == "onnx":
                raise ValueError(
                    "precision 'bf16' is PyTorch's CPU autocast; onnxruntime serves int8 or fp32"
                )
            onnx = False
        if not onnx and precision == "int8":
            raise ValueError("precision 'int8' is onnxruntime's: use encoder backend auto or onnx on CPU")
        from model.paths import cache_root

        graphs = Path(cache_dir) if cache_dir is not None else cache_root()
        cached = {}
        if onnx:  # graphs an earlier start exported: served with no PyTorch encoder built
            names = _transformer_spec_names(profile, text_model, audio_model, tiny_dir)
            cached = cached_onnx_served(
                {m: spec for m, spec in recorded.items() if names.get(m) == spec.name},
                cache_dir=graphs,
                precision=precision,
                device=device,
                threads=intra_op_threads,
            )
        profile_encoders = build_encoders(
            profile,
            device=device,
            precision="fp32" if onnx else precision,  # PyTorch is the parity reference: fp32
            text_model=text_model,
            audio_model=audio_model,
            tiny_dir=tiny_dir,
            only=[m for m in recorded if m not in cached],
        )
        built = {str(m): e for m, e in profile_encoders.items() if str(m) in recorded}
        if onnx:
            built = onnx_served(
                built,
                cache_dir=graphs,
                precision=precision,
                device=device,
                threads=intra_op_threads,
                strict=backend == "onnx",
            )
        built.update(cached)
        source = f"the encoders of profile {profile!r}"
    checked = checked_encoders(recorded, built, source)
    return checked if voice is None else voiced_encoders(checked, voice)


def voiced_encoders(encoders: Mapping[str, Encoder], voice: EncoderSpec) -> dict[str, Encoder]:
    """`encoders` with the audio one followed by the extractor of `voice` (eGeMAPS, numpy);
    `EncoderMismatchError` when the extractor here computes other features than the recorded ones."""
    from model.encoders.voiced import VoicedAudioEncoder

    if "audio" not in encoders:
        raise ValueError("a voice expert is heard beside an audio encoder; the checkpoint has none")
    if not voice.name.startswith("egemaps:"):
        raise ValueError(f"no extractor for the voice expert's features {voice.summary()}")
    from model.encoders.egemaps import EGeMAPSEncoder

    extractor = EGeMAPSEncoder()
    if not extractor.spec.matches(voice):
        raise EncoderMismatchError(
            f"the voice expert was trained on {voice.summary()}, "
            f"this openSMILE computes {extractor.spec.summary()}"
        )
    return {**encoders, "audio": VoicedAudioEncoder(encoders["audio"], extractor)}


def onnx_served(
    encoders: Mapping[str, Encoder],
    *,
    cache_dir: Path,
    precision: Precision,
    device: str = "cpu",
    threads: int | Sequence[int] | None = None,
    strict: bool = False,
) -> dict[str, Encoder]:
    """`encoders` with each exportable PyTorch one replaced by its onnxruntime graph, where it passes.

    Each is exported once into `cache_dir` with its probe vectors (`model.encoders.graphs`; exported
    again when the stored vectors are not this encoder's, e.g. a damaged cache); then
    `precision` auto tries int8 and fp32, int8 / fp32 only that one, and a graph serves when the lowest
    cosine of its vectors to the fp32 PyTorch ones over the probes reaches `PARITY_COSINE` (checked at
    every start, as the LPGNet graph is). A graph that fails is marked (`REJECTED` in its directory,
    which is keyed by the weights): later starts skip it without loading it again. `strict`: no graph
    that passes is a `ValueError`; else the PyTorch encoder stays, at the precision "auto" gives it,
    with a warning.
    """
    from model.encoders.graphs import export_encoder_cached, exportable, reference_agrees
    from model.encoders.precision import resolve_bf16

    served: dict[str, Encoder] = {}
    for modality, encoder in encoders.items():
        served[modality] = encoder
        if not exportable(encoder):
            continue
        failures: list[str] = []
        try:
            graph = export_encoder_cached(encoder, cache_dir)  # type: ignore[arg-type]
            if not reference_agrees(graph, encoder):  # damaged, or written by a faulty writer: redo it
                log.warning(
                    "the %s graph's reference vectors disagree with its weights: exporting again", modality
                )
                graph = export_encoder_cached(encoder, cache_dir, refresh=True)  # type: ignore[arg-type]
            onnx = _passing_graph(modality, graph, precision, device, threads, failures)
            if onnx is not None:
                served[modality] = onnx
        except Exception as exc:  # noqa: BLE001 - exporter, quantiser and runtime fail in many ways
            failures.append(f"{type(exc).__name__}: {exc}")
        if served[modality] is encoder:
            if strict:
                raise ValueError(f"no onnxruntime graph serves the {modality} encoder: {'; '.join(failures)}")
            if precision == "auto" and hasattr(encoder, "bf16"):
                encoder = copy.copy(encoder)  # shares the weights; bf16 autocast where the CPU has it
                encoder.bf16 = resolve_bf16("auto", resolve_device(device))
                served[modality] = encoder
            log.warning("%s encoder stays in PyTorch: %s", modality, "; ".join(failures))
    return served


def cached_onnx_served(
    recorded: Mapping[str, EncoderSpec],
    *,
    cache_dir: Path,
    precision: Precision,
    device: str = "cpu",
    threads: int | Sequence[int] | None = None,
) -> dict[str, Encoder]:
    """The recorded encoders whose graphs an earlier start exported into `cache_dir` and that pass
    their probes there, without building any PyTorch encoder (the spec names the directory; the
    probes' PyTorch fp32 vectors lie beside the graph). A modality left out goes the long way
    (`onnx_served`): nothing cached, no graph passing, or anything failing here."""
    from model.encoders.graphs import GRAPH_FILE, REFERENCE, graph_directory

    served: dict[str, Encoder] = {}
    for modality, spec in recorded.items():
        graph = graph_directory(spec, cache_dir)
        if not ((graph / GRAPH_FILE).is_file() and (graph / REFERENCE).is_file()):
            continue
        try:
            onnx = _passing_graph(modality, graph, precision, device, threads, [])
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry: the long way decides
            log.warning("the cached %s graph %s cannot serve: %s", modality, graph.name, exc)
            continue
        if onnx is not None:
            served[modality] = onnx
    return served


def _transformer_spec_names(
    profile: str, text_model: str | None, audio_model: str | None, tiny_dir: str | Path | None
) -> dict[str, str]:
    """Per modality, the spec name of the transformer the profile (with its overrides) would build,
    known without reading weights. Only a recorded spec of that very name may be served from a cached
    graph, so a start fails the spec check (or passes it) whatever the cache holds."""
    from model.encoders.emotion2vec import DEFAULT_MODEL
    from model.encoders.identity import emotion2vec_spec_name, text_spec_name
    from model.encoders.profiles import resolve_profile

    resolved = resolve_profile(profile, text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir)
    names: dict[str, str] = {}
    if resolved.text is not None and resolved.text.kind == "hf":
        names["text"] = text_spec_name(resolved.text.name, resolved.text.model, resolved.text.pooling)
    if resolved.audio is not None and resolved.audio.kind == "emotion2vec":
        names["audio"] = emotion2vec_spec_name(resolved.audio.name, resolved.audio.model or DEFAULT_MODEL)
    return names


def _passing_graph(
    modality: str,
    graph: Path,
    precision: Precision,
    device: str,
    threads: int | Sequence[int] | None,
    failures: list[str],
) -> Encoder | None:
    """The first of the graph's precisions `precision` allows (auto: int8, then fp32) whose probe vectors
    reach `PARITY_COSINE` against the reference beside `graph`; None (each failure in `failures`)."""
    from model.encoders.graphs import (
        PARITY_COSINE,
        REJECTED,
        load_onnx_encoder,
        quantize_encoder_graph,
        reference_cosine,
    )

    for candidate in ["int8", "fp32"] if precision == "auto" else [precision]:
        try:
            directory = graph if candidate == "fp32" else quantize_encoder_graph(graph)
            recorded = _recorded_cosine(directory / REJECTED)
            if recorded is not None and recorded < PARITY_COSINE:  # this very graph failed these probes
                failures.append(f"{candidate}: probe cosine {recorded:.5f} < {PARITY_COSINE} (recorded)")
                continue
            onnx = load_onnx_encoder(directory, device=device, intra_op_threads=threads)
            cosine = reference_cosine(directory, onnx)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot be built: try the next one
            failures.append(f"{candidate}: {type(exc).__name__}: {exc}")
            continue
        if cosine >= PARITY_COSINE:
            log.info("%s encoder: onnxruntime %s (probe cosine %.5f)", modality, candidate, cosine)
            return onnx
        failures.append(f"{candidate}: probe cosine {cosine:.5f} < {PARITY_COSINE}")
        _write_atomically(directory / REJECTED, json.dumps({"cosine": cosine, "bound": PARITY_COSINE}))
    return None


def checked_encoders(
    recorded: Mapping[str, EncoderSpec], encoders: Mapping[str, Encoder], source: str = "the encoders given"
) -> dict[str, Encoder]:
    """`encoders` cut to the checkpoint's modalities; `EncoderMismatchError` unless their specs match."""
    kept = {m: e for m, e in encoders.items() if m in recorded}
    try:
        check_encoders_match(dict(recorded), {m: e.spec for m, e in kept.items()})
    except EncoderMismatchError as exc:
        raise EncoderMismatchError(f"{source} do not match the checkpoint's: {exc}") from exc
    return kept


def load_bundle_encoders(
    bundle_dir: str | Path, *, device: str = "auto", intra_op_threads: int | Sequence[int] | None = None
) -> dict[str, Encoder]:
    """The encoders of an exported bundle: onnxruntime where a graph exists, native otherwise."""
    from model.encoders.onnx import OnnxEmotion2VecEncoder, OnnxTextEncoder
    from model.encoders.profiles import AudioEncoderConfig, build_audio_encoder

    root = Path(bundle_dir)
    manifest = json.loads((root / MANIFEST).read_text())
    encoders: dict[str, Encoder] = {}
    for modality, entry in manifest["encoders"].items():
        if entry["backend"] == "onnx":
            cls = OnnxTextEncoder if modality == "text" else OnnxEmotion2VecEncoder
            encoders[modality] = cls(root / entry["dir"], device=device, intra_op_threads=intra_op_threads)
        elif modality == "audio":
            encoders[modality] = build_audio_encoder(AudioEncoderConfig(kind=entry["kind"]), device=device)
        else:
            raise ValueError(f"{root}: no way to build a native {modality} encoder")
    return encoders


def _recorded_cosine(path: Path) -> float | None:
    """The cosine a REJECTED marker records; None when there is none or it cannot be read (another
    process may be writing it): the candidate is then checked again."""
    try:
        return float(json.loads(path.read_text())["cosine"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Other processes sharing the cache read this file: they see the old state or the new, never half."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


__all__ = [
    "ENCODER_BACKENDS",
    "MANIFEST",
    "EncoderBackend",
    "checked_encoders",
    "cached_onnx_served",
    "checkpoint_encoders",
    "load_bundle_encoders",
    "onnx_served",
]
