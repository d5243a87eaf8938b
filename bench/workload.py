"""The requests the benchmark sends: real speech with its exact transcripts.

The 16 RAVDESS clips in ../shared/data/speech/ravdess (48 kHz, 3.3-4.1 s) are named
03-01-EE-II-SS-RR-AA.wav; statement SS 01 is "Kids are talking by the door", 02 "Dogs are sitting by
the door". Conversation j's k-th utterance is clip (j + k) mod 16, so concurrent conversations send
different clips at the same moment and micro-batches mix lengths, as they would in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from model.paths import SHARED_ROOT

RAVDESS_DIR = SHARED_ROOT / "data" / "speech" / "ravdess"
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@dataclass(frozen=True)
class Clip:
    """One utterance: the uploaded file, its transcript, and its waveform at the encoder's rate."""

    path: Path
    transcript: str

    @cached_property
    def data(self) -> bytes:
        return self.path.read_bytes()

    def waveform(self, sample_rate: int) -> np.ndarray:
        """(S,) float32 mono at `sample_rate`, decoded and resampled exactly as the service does."""
        from model.encoders.audio import decode_audio, resample

        decoded = decode_audio(self.data, max_seconds=60.0, max_bytes=len(self.data))
        return resample(decoded.waveform, decoded.sample_rate, sample_rate)

    @property
    def seconds(self) -> float:
        import soundfile as sf

        info = sf.info(str(self.path))
        return float(info.frames / info.samplerate)


def load_clips(directory: Path = RAVDESS_DIR) -> list[Clip]:
    """Every RAVDESS clip in `directory`, in name order, with the transcript its name encodes."""
    paths = sorted(directory.glob("03-01-*.wav"))
    if not paths:
        raise FileNotFoundError(f"no RAVDESS clips (03-01-*.wav) in {directory}")
    return [Clip(p, STATEMENTS[p.stem.split("-")[4]]) for p in paths]


def synthetic_clips(directory: Path, count: int = 16) -> list[Clip]:
    """RAVDESS-like stand-ins where the clips are absent (a GPU machine gets the checkout alone).

    `count` 48 kHz mono WAVs of 3.3-4.1 s (a voiced-like tone with harmonics under noise, fixed seed),
    written once into `directory`, with the two RAVDESS statements as transcripts. Encoder cost depends
    on the length, not on what is said, so they stand in for speed; they mean nothing for accuracy.
    """
    import soundfile as sf

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rate, clips = 48_000, []
    for i in range(count):
        path = directory / f"synthetic-{i:02d}.wav"
        seconds = 3.3 + 0.8 * i / max(1, count - 1)
        if not path.is_file():
            t = np.arange(int(seconds * rate)) / rate
            f0 = 110.0 + 10.0 * i
            wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * 0.2
            wave = wave + 0.02 * rng.standard_normal(t.size)
            partial = path.with_suffix(".part.wav")
            sf.write(partial, wave.astype(np.float32), rate, subtype="PCM_16")
            partial.rename(path)
        clips.append(Clip(path, list(STATEMENTS.values())[i % 2]))
    return clips


def clip_for(clips: list[Clip], conversation: int, turn: int) -> Clip:
    """The clip conversation `conversation` sends as its `turn`-th utterance."""
    return clips[(conversation + turn) % len(clips)]
