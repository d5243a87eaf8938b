"""What the engine takes and answers, and how an uploaded clip becomes a waveform within the bounds.

`UtteranceRequest` (one utterance of a conversation, as the routes hand it over), `ScoredUtterance`
(the answer, or an earlier attempt's replayed), `decode_upload` (decode and resample an uploaded file
under the service's limits: size, duration, rate, channels, decoded samples) and `tone_wav` (the clip the
warm-up decodes).
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass

import numpy as np

from app.predictions import Prediction
from app.settings import Settings
from app.store import ConversationKey
from model.encoders.audio import EmptyAudioError, decode_audio, resample


@dataclass(frozen=True)
class UtteranceRequest:
    key: ConversationKey
    transcript: str | None = None
    audio: bytes | None = None  # an encoded audio file, as uploaded
    utterance_id: str | None = None
    speaker: str | None = None

    def content_hash(self) -> str:
        """What makes two attempts "the same utterance": transcript, audio bytes and speaker."""
        h = hashlib.sha256()
        for part in (self.transcript, self.audio, self.speaker):
            raw = b"" if part is None else part if isinstance(part, bytes) else part.encode()
            h.update(b"-" if part is None else b"+")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
        return h.hexdigest()


@dataclass(frozen=True)
class ScoredUtterance:
    index: int
    utterance_id: str | None
    prediction: Prediction
    replayed: bool = False  # True: the stored answer of an earlier attempt


def decode_upload(data: bytes, settings: Settings, sample_rate: int | None) -> np.ndarray:
    """The uploaded file as a mono float32 waveform at `sample_rate` (None: its own), bounded by the
    settings before it is decoded whole (typed errors become 4xx)."""
    decoded = decode_audio(
        data,
        max_seconds=settings.max_audio_seconds,
        max_bytes=settings.max_request_bytes,
        min_seconds=settings.min_audio_seconds,
        max_sample_rate=settings.max_audio_sample_rate,
        min_sample_rate=settings.min_audio_sample_rate,
        max_channels=settings.max_audio_channels,
        max_samples=settings.max_audio_samples,
    )
    if sample_rate is None:
        return decoded.waveform
    waveform = resample(decoded.waveform, decoded.sample_rate, sample_rate)
    if len(waveform) == 0:  # one frame at 48 kHz is none at 16 kHz: the encoder would fail
        raise EmptyAudioError("the audio is too short to hold a single sample at the model's rate")
    return waveform


def tone_wav(seconds: float, sample_rate: int = 16_000) -> bytes:
    """A quiet 220 Hz tone as a 16-bit WAV file, for warming up the decode path."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    samples = (0.05 * np.sin(2 * np.pi * 220.0 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


__all__ = ["ScoredUtterance", "UtteranceRequest", "decode_upload", "tone_wav"]
