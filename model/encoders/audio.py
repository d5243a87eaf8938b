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
    """The encoded file has more bytes, or decodes to more samples, than the limits (map to 413)."""


class AudioTooShortError(AudioDecodeError):
    """The audio is shorter than the configured minimum: too little to score (map to 422)."""


class AudioOutOfBoundsError(AudioDecodeError):
    """A sample rate or channel count beyond the configured bounds (map to 422)."""


_UNKNOWN_FRAMES = 2**63 - 1  # what libsndfile reports when the header does not state a length
_BLOCK_FRAMES = 32_768  # decoded per step: memory is one block of every channel plus the mono result


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded upload: `waveform` is (S,) float32 mono at `sample_rate` Hz."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sample_rate


def decode_audio(
    data: bytes,
    *,
    max_seconds: float,
    max_bytes: int,
    min_seconds: float = 0.0,
    max_sample_rate: int | None = None,
    min_sample_rate: int | None = None,
    max_channels: int | None = None,
    max_samples: int | None = None,
) -> DecodedAudio:
    """Decode an audio file held in memory into mono float32 at its own sample rate.

    Everything the header states is checked before any sample is decoded: the byte limit, the sample
    rate and channel bounds, the duration, and the decoded size (`max_samples`: frames x channels).
    Then the file is decoded a block at a time and mixed to mono as it goes, counting, so a header
    that says nothing (or lies) cannot make it hold more than the limits either: memory stays at one
    block of all channels plus the mono result. A WAV cut short inside its data chunk decodes to the
    frames that arrived (libsndfile's behaviour); one cut inside its header is undecodable. Audio
    shorter than `min_seconds` is refused.
    """
    if len(data) == 0:
        raise EmptyAudioError("the audio is empty (0 bytes)")
    if len(data) > max_bytes:
        raise AudioTooLargeError(f"the audio file has {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sample_rate, channels, frames, fmt = f.samplerate, f.channels, f.frames, f.format
            if frames >= _UNKNOWN_FRAMES:  # a stream's header (FLAC total_samples 0): libsndfile
                # cannot read such a file to its end from memory, so it is refused, not half read
                raise UndecodableAudioError(f"the {fmt} header does not state the audio's length")
            if sample_rate <= 0 or channels <= 0:
                raise UndecodableAudioError(f"the {fmt} header is invalid")
            if max_sample_rate is not None and sample_rate > max_sample_rate:
                raise AudioOutOfBoundsError(
                    f"the audio's sample rate is {sample_rate} Hz, above the limit of {max_sample_rate} Hz"
                )
            if min_sample_rate is not None and sample_rate < min_sample_rate:
                raise AudioOutOfBoundsError(
                    f"the audio's sample rate is {sample_rate} Hz, below the limit of {min_sample_rate} Hz"
                )
            if max_channels is not None and channels > max_channels:
                raise AudioOutOfBoundsError(
                    f"the audio has {channels} channels, more than the limit of {max_channels}"
                )
            max_frames = int(max_seconds * sample_rate)
            if frames > max_frames:  # 0 when the header does not say
                raise AudioTooLongError(
                    f"the audio lasts {frames / sample_rate:.2f} s, more than the limit of {max_seconds:g} s"
                )
            if max_samples is not None and frames * channels > max_samples:
                raise AudioTooLargeError(_too_many_samples(sample_rate, channels, frames, max_samples))
            sample_cap = max_frames if max_samples is None else min(max_frames, max_samples // channels)
            waveform = _read_mono(f, channels, sample_cap + 1)
    except AudioDecodeError:
        raise
    except sf.LibsndfileError as exc:
        # libsndfile's own message names the format problem, never a path (we read from memory).
        raise UndecodableAudioError(f"the audio could not be decoded: {exc.error_string}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UndecodableAudioError("the audio could not be decoded") from exc
    if len(waveform) > max_frames:
        raise AudioTooLongError(f"the audio lasts more than the limit of {max_seconds:g} s")
    if len(waveform) > sample_cap:
        assert max_samples is not None
        raise AudioTooLargeError(_too_many_samples(sample_rate, channels, len(waveform), max_samples, "more"))
    if len(waveform) == 0:
        raise EmptyAudioError("the audio holds no samples")
    if len(waveform) < min_seconds * sample_rate:
        raise AudioTooShortError(
            f"the audio lasts {len(waveform) / sample_rate:.3f} s, less than the minimum of {min_seconds:g} s"
        )
    logger.debug("decoded %s: %d Hz, %d channel(s), %d frames", fmt, sample_rate, channels, len(waveform))
    return DecodedAudio(waveform=waveform, sample_rate=sample_rate)


def _too_many_samples(rate: int, channels: int, frames: int, limit: int, at_least: str = "") -> str:
    return (
        f"the audio decodes to {at_least + ' than ' if at_least else ''}{frames * channels} samples"
        f" ({rate} Hz x {channels} channels x {frames} frames), more than the limit of {limit}"
    )


def _read_mono(f: sf.SoundFile, channels: int, max_frames: int) -> np.ndarray:
    """At most `max_frames` frames of `f`, mixed to mono block by block: (S,) float32.

    Raises `NonFiniteAudioError` at the first block holding NaN or infinity.
    """
    blocks: list[np.ndarray] = []
    total = 0
    while total < max_frames:
        want = min(_BLOCK_FRAMES, max_frames - total)
        block = f.read(frames=want, dtype="float32", always_2d=True)  # (B, C)
        if len(block) == 0:
            break
        if not np.isfinite(block).all():
            raise NonFiniteAudioError("the audio holds NaN or infinite samples")
        blocks.append(block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0].copy())
        total += len(block)
    if not blocks:
        return np.zeros(0, np.float32)
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def resample(wave: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Resample a mono waveform (S,) from `from_sr` to `to_sr` Hz with soxr HQ; returns float32."""
    wave = np.asarray(wave, dtype=np.float32)
    if from_sr == to_sr:
        return wave
    if len(wave) == 0:
        return wave.copy()
    return np.asarray(soxr.resample(wave, from_sr, to_sr, quality="HQ"), dtype=np.float32)
