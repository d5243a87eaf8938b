"""A checkpoint's audio encoder followed by its voice expert's (`model.voice`): one vector per clip.

The network reads the first Da numbers of each audio vector, the voice expert the last E
(`model.voice.voice_added`), so the store, the windows and evaluation carry one audio vector as
before. The expert's encoder runs on the same waveform resampled to its own rate. A corpus that
stores only the network's features (the IEMOCAP table's prosody-8) is read with the expert's part
zero (`model.features.extract_features`): the expert then stays silent on those rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.encoders.audio import resample
from model.encoders.base import Encoder, EncoderSpec


def voiced_spec(base: EncoderSpec, voice: EncoderSpec) -> EncoderSpec:
    return EncoderSpec(
        name=f"{base.name}+{voice.name}",
        version=f"{base.version}+{voice.version}",
        dim=base.dim + voice.dim,
        modality="audio",
    )


class VoicedAudioEncoder:
    """(N, Da + E) float32: `base`'s vectors, then `voice`'s, of waveforms at `base`'s rate."""

    def __init__(self, base: Encoder, voice: Encoder) -> None:
        if base.sample_rate is None or voice.sample_rate is None:
            raise ValueError("both audio encoders of a voiced encoder need a sample rate")
        self.base, self.voice = base, voice
        self.sample_rate: int | None = base.sample_rate
        self.spec = voiced_spec(base.spec, voice.spec)
        self.precision = getattr(base, "precision", "fp32")

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """items: N mono float32 waveforms at `sample_rate` Hz -> (N, Da + E)."""
        return self.join(self.base.encode_batch(items), self.encode_voice(items))

    def encode_voice(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """The voice expert's part alone, (N, E), of waveforms at `sample_rate` Hz (the service runs it
        beside `base.encode_batch` when both are one-thread extractors, `app.workers`)."""
        assert self.sample_rate is not None and self.voice.sample_rate is not None
        return self.voice.encode_batch([resample(w, self.sample_rate, self.voice.sample_rate) for w in items])

    @staticmethod
    def join(base: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """(N, Da) and (N, E) -> the stored vectors (N, Da + E), float32."""
        return torch.cat([base.float(), voice.float()], 1)


__all__ = ["VoicedAudioEncoder", "voiced_spec"]
