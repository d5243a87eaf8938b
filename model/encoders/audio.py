"""Decoding uploaded audio into the mono float32 waveforms the audio encoders take.

`decode_audio` accepts whatever libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, ...), at any sample
rate and sample format (8/16/24/32-bit integer PCM, 32/64-bit float), with any number of channels,
and returns the mean of the channels as float32 in [-1, 1] (integer PCM is scaled by libsndfile).
`resample` converts between rates with soxr at "HQ" quality, the resampler `librosa.load` uses by
default, so features computed on resampled uploads match features computed with librosa.

Every failure is an `AudioDecodeError`; the service maps the subclasses to 4xx responses
(`AudioTooLongError`/`AudioTooLargeError` to 413, the others to 400/422). Messages never contain
paths or library internals beyond the format name. All-zero (silent) audio is valid.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)


class AudioDecodeError(ValueError):
    """Base of every audio decoding failure; safe to show to the client."""


class UndecodableAudioError(AudioDecodeError):
    """The bytes are not an audio file libsndfile can read (garbage, unknown format, broken header)."""


class EmptyAudioError(AudioDecodeError):
    """No bytes, or a valid file with zero frames."""


class NonFiniteAudioError(AudioDecodeError):
    """A float file holding NaN or infinite samples."""


class AudioTooLongError(AudioDecodeError):
    """The audio lasts longer than the configured limit (map to 413)."""


class AudioTooLargeError(AudioDecodeError):
    """The encoded file has more bytes than the configured limit (map to 413)."""


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded upload: `waveform` is (S,) float32 mono at `sample_rate` Hz."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sample_rate


def decode_audio(data: bytes, *, max_seconds: float, max_bytes: int) -> DecodedAudio:
    """Decode an audio file held in memory into mono float32 at its own sample rate.

    The byte limit is checked first, then the duration from the header (before any sample is
    decoded); for formats whose header does not state a length, at most `max_seconds` worth of
    frames (+1) are decoded before giving up. A WAV cut short inside its data chunk decodes to the
    frames that arrived (libsndfile's behaviour); one cut inside its header is undecodable.
    """
    if len(data) == 0:
        raise EmptyAudioError("the audio is empty (0 bytes)")
    if len(data) > max_bytes:
        raise AudioTooLargeError(f"the audio file has {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sample_rate, channels, frames, fmt = f.samplerate, f.channels, f.frames, f.format
            if sample_rate <= 0 or channels <= 0:
                raise UndecodableAudioError(f"the {fmt} header is invalid")
            max_frames = int(max_seconds * sample_rate)
            if frames > max_frames:  # 0 when the header does not say
                raise AudioTooLongError(
                    f"the audio lasts {frames / sample_rate:.2f} s, more than the limit of {max_seconds:g} s"
                )
            samples = f.read(frames=max_frames + 1, dtype="float32", always_2d=True)  # (S, C)
    except AudioDecodeError:
        raise
    except sf.LibsndfileError as exc:
        # libsndfile's own message names the format problem, never a path (we read from memory).
        raise UndecodableAudioError(f"the audio could not be decoded: {exc.error_string}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UndecodableAudioError("the audio could not be decoded") from exc
    if len(samples) > max_frames:
        raise AudioTooLongError(f"the audio lasts more than the limit of {max_seconds:g} s")
    if len(samples) == 0:
        raise EmptyAudioError("the audio holds no samples")
    if not np.isfinite(samples).all():
        raise NonFiniteAudioError("the audio holds NaN or infinite samples")
    waveform = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    logger.debug("decoded %s: %d Hz, %d channel(s), %d frames", fmt, sample_rate, channels, len(samples))
    return DecodedAudio(waveform=np.ascontiguousarray(waveform, dtype=np.float32), sample_rate=sample_rate)


def resample(wave: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Resample a mono waveform (S,) from `from_sr` to `to_sr` Hz with soxr HQ; returns float32."""
    wave = np.asarray(wave, dtype=np.float32)
    if from_sr == to_sr:
        return wave
    if len(wave) == 0:
        return wave.copy()
    return np.asarray(soxr.resample(wave, from_sr, to_sr, quality="HQ"), dtype=np.float32)
