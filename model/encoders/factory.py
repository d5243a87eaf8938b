"""The encoders that serve a checkpoint, built and checked in one place: `checkpoint_encoders`.

The service (`app.runtime.load_runtime`), `lpgnet evaluate` (`model.evaluate.predict_checkpoint`) and
`lpgnet export` (`model.export.export_bundle`) all call it, so a checkpoint is never served, scored or
exported with other encoders than the ones it records. The encoders come from an encoder profile
(`model.encoders.profiles.build_encoders`, with per-modality local-directory overrides) or from the
graphs of an `lpgnet export` bundle (`load_bundle_encoders`); only the checkpoint's modalities are kept,
and their specs must match the recorded ones (`EncoderMismatchError` otherwise).

`build_encoders` is called directly only where there is no checkpoint yet: `lpgnet train` builds its
profile's encoders and records their specs in the checkpoint it writes, and `profiles.profile_specs`
learns a profile's specs (the benchmark writes random checkpoints with them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from model.encoders.base import Encoder, EncoderMismatchError, EncoderSpec, check_encoders_match
from model.encoders.precision import Precision

MANIFEST = "manifest.json"  # what `lpgnet export` writes into a bundle: graphs, specs, checkpoint


def checkpoint_encoders(
    recorded: Mapping[str, EncoderSpec],
    profile: str,
    *,
    device: str,
    precision: Precision,
    bundle: str | Path | None = None,
    intra_op_threads: int | None = None,
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
) -> dict[str, Encoder]:
    """The encoders of the modalities a checkpoint records (`recorded`: modality -> spec), checked.

    With `bundle` (an `lpgnet export` directory): its graphs in onnxruntime (`intra_op_threads` each)
    and native extractors for numpy features; the profile and overrides are not used. Otherwise the
    profile's encoders with the local-directory overrides, PyTorch ones at `precision`. Raises
    `EncoderMismatchError` when a spec differs, `KeyError` / `ValueError` when they cannot be built.
    """
    if bundle is not None:
        built = load_bundle_encoders(bundle, device=device, intra_op_threads=intra_op_threads)
        source = f"the encoders of the bundle {Path(bundle).name}"
    else:
        from model.encoders.profiles import build_encoders  # heavy: transformers, funasr

        profile_encoders = build_encoders(
            profile,
            device=device,
            precision=precision,
            text_model=text_model,
            audio_model=audio_model,
            tiny_dir=tiny_dir,
        )
        built = {str(m): e for m, e in profile_encoders.items()}
        source = f"the encoders of profile {profile!r}"
    return checked_encoders(recorded, built, source)


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
    bundle_dir: str | Path, *, device: str = "auto", intra_op_threads: int | None = None
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


__all__ = ["MANIFEST", "checked_encoders", "checkpoint_encoders", "load_bundle_encoders"]
