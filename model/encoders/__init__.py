"""Feature encoders: text, audio and prosodic extractors behind one `Encoder` protocol.

Names are re-exported lazily (PEP 562), so `import model.encoders.audio` in the service does not pull
in librosa, transformers or FunASR.

    base        Encoder, EncoderSpec, check_encoders_match
    factory     checkpoint_encoders, checked_encoders, load_bundle_encoders (a checkpoint's encoders)
    profiles    PROFILES, EncoderProfile, build_encoders, encoder_specs, profile_specs
    text        HFTextEncoder (BERT / MiniLM)
    emotion2vec Emotion2VecEncoder (FunASR, batched)
    prosody     Prosody8Encoder, prosody8, prosody8_reference
    precomputed PrecomputedEncoder (corpus columns, e.g. IEMOCAP `prosody`)
    egemaps     EGeMAPSEncoder (openSMILE)
    audio       decode_audio, resample, AudioDecodeError and subclasses
    onnx        export_text_encoder, export_emotion2vec, OnnxTextEncoder, OnnxEmotion2VecEncoder
    tiny        write_tiny_encoders
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Encoder": "base",
    "EncoderSpec": "base",
    "EncoderMismatchError": "base",
    "check_encoders_match": "base",
    "checked_encoders": "factory",
    "checkpoint_encoders": "factory",
    "load_bundle_encoders": "factory",
    "AudioEncoderConfig": "profiles",
    "EncoderProfile": "profiles",
    "PROFILES": "profiles",
    "TextEncoderConfig": "profiles",
    "build_encoders": "profiles",
    "encoder_specs": "profiles",
    "profile_specs": "profiles",
    "resolve_profile": "profiles",
    "HFTextEncoder": "text",
    "Emotion2VecEncoder": "emotion2vec",
    "Prosody8Encoder": "prosody",
    "PROSODY8_SPEC": "prosody",
    "prosody8": "prosody",
    "prosody8_reference": "prosody",
    "PrecomputedEncoder": "precomputed",
    "EGeMAPSEncoder": "egemaps",
    "AudioDecodeError": "audio",
    "AudioTooLargeError": "audio",
    "AudioTooLongError": "audio",
    "DecodedAudio": "audio",
    "EmptyAudioError": "audio",
    "NonFiniteAudioError": "audio",
    "UndecodableAudioError": "audio",
    "decode_audio": "audio",
    "resample": "audio",
    "OnnxEmotion2VecEncoder": "onnx",
    "OnnxTextEncoder": "onnx",
    "export_emotion2vec": "onnx",
    "export_text_encoder": "onnx",
    "write_tiny_encoders": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
