"""decode_audio / resample: every format, width and channel layout the service may receive, and every
way an upload can be wrong."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.encoders.audio import (
    AudioDecodeError,
    AudioOutOfBoundsError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    DecodedAudio,
    EmptyAudioError,
    NonFiniteAudioError,
    UndecodableAudioError,
    decode_audio,
    resample,
)

LIMITS = {"max_seconds": 30.0, "max_bytes": 10_000_000}


def tone(seconds: float, sample_rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """(S, C) float64 sines, a different frequency per channel."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.stack([amplitude * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)


def encode(samples: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 1e-7),
        ("WAV", "DOUBLE", 1e-7),
        ("FLAC", "PCM_S8", 1e-2),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
        ("OGG", "VORBIS", None),
    ],
)
def test_formats_and_sample_widths_decode_to_float32_mono(fmt: str, subtype: str, atol: float | None) -> None:
    samples = tone(0.5, 22_050)
    decoded = decode_audio(encode(samples, 22_050, fmt, subtype), **LIMITS)
    assert isinstance(decoded, DecodedAudio)
    assert decoded.sample_rate == 22_050 and decoded.waveform.dtype == np.float32
    assert decoded.waveform.ndim == 1
    if atol is None:  # lossy: same length, similar energy
        assert abs(len(decoded.waveform) - len(samples)) <= 1
        assert abs(np.std(decoded.waveform) - np.std(samples)) < 0.05
    else:
        np.testing.assert_allclose(decoded.waveform, samples[:, 0], atol=atol)


def test_8khz_stereo_24bit_wav_is_mixed_down_to_the_channel_mean() -> None:
    samples = tone(1.0, 8_000, channels=2, amplitude=0.4)
    decoded = decode_audio(encode(samples, 8_000, "WAV", "PCM_24"), **LIMITS)
    assert decoded.sample_rate == 8_000 and decoded.duration_s == pytest.approx(1.0)
    np.testing.assert_allclose(decoded.waveform, samples.mean(axis=1), atol=1e-6)


def test_six_channel_wav_is_mixed_down() -> None:
    samples = tone(0.25, 48_000, channels=6, amplitude=0.15)
    decoded = decode_audio(encode(samples, 48_000, "WAV", "PCM_16"), **LIMITS)
    np.testing.assert_allclose(decoded.waveform, samples.mean(axis=1), atol=1e-4)


def test_real_48khz_ravdess_clip(ravdess_paths: list[Path]) -> None:
    data = ravdess_paths[0].read_bytes()
    decoded = decode_audio(data, **LIMITS)
    assert decoded.sample_rate == 48_000 and 3.0 < decoded.duration_s < 4.5
    at_16k = resample(decoded.waveform, 48_000, 16_000)
    assert at_16k.dtype == np.float32 and abs(len(at_16k) - len(decoded.waveform) // 3) <= 1


def test_silent_audio_is_valid() -> None:
    decoded = decode_audio(encode(np.zeros((16_000, 1)), 16_000, "WAV", "PCM_16"), **LIMITS)
    assert len(decoded.waveform) == 16_000 and not decoded.waveform.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav_is_rejected(bad: float) -> None:
    samples = tone(0.1, 16_000)
    samples[100, 0] = bad
    with pytest.raises(NonFiniteAudioError):
        decode_audio(encode(samples, 16_000, "WAV", "FLOAT"), **LIMITS)


def test_empty_bytes_and_zero_length_wav_are_empty() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(b"", **LIMITS)
    with pytest.raises(EmptyAudioError):
        decode_audio(encode(np.zeros((0, 1)), 16_000, "WAV", "PCM_16"), **LIMITS)


def test_garbage_bytes_are_undecodable() -> None:
    with pytest.raises(UndecodableAudioError) as info:
        decode_audio(b"this is not audio at all" * 20, **LIMITS)
    assert "BytesIO" not in str(info.value) and "/" not in str(info.value)


def test_truncated_wav() -> None:
    data = encode(tone(1.0, 16_000), 16_000, "WAV", "PCM_16")
    with pytest.raises(UndecodableAudioError):  # cut inside the header
        decode_audio(data[:30], **LIMITS)
    decoded = decode_audio(data[: 44 + 2 * 4_000], **LIMITS)  # cut inside the data: the frames that arrived
    assert len(decoded.waveform) == 4_000


def test_too_long_audio_is_refused_from_the_header() -> None:
    data = encode(np.zeros((16_000 * 31, 1)), 16_000, "WAV", "PCM_16")
    with pytest.raises(AudioTooLongError):
        decode_audio(data, max_seconds=30.0, max_bytes=10_000_000)
    assert decode_audio(data, max_seconds=31.0, max_bytes=10_000_000).duration_s == pytest.approx(31.0)


def test_too_large_file_is_refused_before_decoding() -> None:
    data = encode(tone(1.0, 16_000), 16_000, "WAV", "PCM_16")
    with pytest.raises(AudioTooLargeError):
        decode_audio(data, max_seconds=30.0, max_bytes=len(data) - 1)


def test_every_error_is_an_audio_decode_error() -> None:
    for error in (
        UndecodableAudioError,
        EmptyAudioError,
        NonFiniteAudioError,
        AudioTooLongError,
        AudioTooLargeError,
    ):
        assert issubclass(error, AudioDecodeError)


def test_resample_keeps_rate_and_duration() -> None:
    wave = tone(1.0, 44_100)[:, 0].astype(np.float32)
    np.testing.assert_array_equal(resample(wave, 44_100, 44_100), wave)
    down = resample(wave, 44_100, 16_000)
    assert down.dtype == np.float32 and len(down) == 16_000
    assert resample(np.zeros(0, np.float32), 48_000, 16_000).shape == (0,)


# ---- bounds: checked from the header before decoding, counted while decoding ---------------------------

BOUNDS = {
    **LIMITS,
    "min_seconds": 0.05,
    "max_sample_rate": 96_000,
    "min_sample_rate": 8_000,
    "max_channels": 8,
    "max_samples": 200_000,
}


def silent_flac(sample_rate: int, channels: int, seconds: float) -> bytearray:
    return bytearray(encode(np.zeros((int(sample_rate * seconds), channels)), sample_rate, "FLAC", "PCM_16"))


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (encode(tone(0.02, 192_000, 2), 192_000, "WAV", "FLOAT"), AudioOutOfBoundsError, "192000 Hz"),
        (encode(tone(0.1, 16_000, 9), 16_000, "WAV", "PCM_16"), AudioOutOfBoundsError, "9 channels"),
        (
            encode(tone(0.5, 4_000), 4_000, "WAV", "PCM_16"),
            AudioOutOfBoundsError,
            "4000 Hz, below the limit of 8000",
        ),
        (encode(tone(0.01, 16_000), 16_000, "WAV", "PCM_16"), AudioTooShortError, "0.010 s"),
        # 8 x 48 kHz x 1 s = 384,000 samples from a few KB: refused from the header
        (bytes(silent_flac(48_000, 8, 1.0)), AudioTooLargeError, "48000 Hz x 8 channels x 48000 frames"),
    ],
    ids=["rate", "channels", "low-rate", "too-short", "decoded-size"],
)
def test_audio_outside_the_bounds_is_refused_naming_the_bound(
    data: bytes, error: type[AudioDecodeError], words: str
) -> None:
    with pytest.raises(error, match=words):
        decode_audio(data, **BOUNDS)  # type: ignore[arg-type]


def test_a_header_that_hides_the_length_cannot_make_the_decoder_exceed_the_sample_bound() -> None:
    # a WAV whose data size says "unknown" (as stream writers write it), holding more than the bound
    samples = encode(tone(2.0, 48_000, 4), 48_000, "WAV", "PCM_16")  # 384,000 samples
    data = bytearray(samples)
    data[data.index(b"data") + 4 : data.index(b"data") + 8] = b"\xff\xff\xff\xff"
    with pytest.raises(AudioTooLargeError, match="limit of 200000"):
        decode_audio(bytes(data), **BOUNDS)  # type: ignore[arg-type]
    # a FLAC stream header without total_samples: refused, never half read
    flac = silent_flac(16_000, 1, 0.5)
    flac[8 + 13] &= 0xF0
    flac[8 + 14 : 8 + 18] = b"\0\0\0\0"
    with pytest.raises(UndecodableAudioError, match="does not state"):
        decode_audio(bytes(flac), **BOUNDS)  # type: ignore[arg-type]


def test_decoding_mixes_block_by_block_to_the_same_mono_as_a_whole_read() -> None:
    samples = tone(3.0, 22_050, 3)  # 66,150 frames: several blocks
    decoded = decode_audio(encode(samples, 22_050, "WAV", "FLOAT"), **LIMITS)
    np.testing.assert_allclose(decoded.waveform, samples.mean(axis=1), atol=1e-6)
