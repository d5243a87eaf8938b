"""The 8 IEMOCAP prosodic features: the fast path equals the README's literal definition on real
speech, values fall in the IEMOCAP table's ranges, and the live and precomputed encoders share a spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model.encoders.audio import resample
from model.encoders.base import check_encoders_match
from model.encoders.precomputed import PrecomputedEncoder
from model.encoders.prosody import (
    FEATURE_NAMES,
    HARMONIC_ATOL,
    SAMPLE_RATE,
    Prosody8Encoder,
    prosody8,
    prosody8_reference,
)
from tests.conftest_encoders import IEMOCAP_TABLE, noise_waves

HARMONIC = FEATURE_NAMES.index("harmonic")


def load_44k(path: Path) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32")
    return resample(y, sr, SAMPLE_RATE)


def assert_matches_reference(y: np.ndarray, harmonic_atol: float = HARMONIC_ATOL) -> None:
    fast, reference = prosody8(y), prosody8_reference(y)
    others = [i for i in range(8) if i != HARMONIC]
    np.testing.assert_allclose(fast[others], reference[others], rtol=1e-12, atol=0)
    assert abs(fast[HARMONIC] - reference[HARMONIC]) <= harmonic_atol


def test_fast_equals_reference_on_real_speech(ravdess_paths: list[Path]) -> None:
    # one clip per emotion (neutral, happy, sad, angry), both actors; the reference takes ~1.4 s a clip
    for path in ravdess_paths[::4]:
        assert_matches_reference(load_44k(path), harmonic_atol=1e-7)  # measured max 1.8e-8 on all 16


@pytest.mark.parametrize("seconds", [0.2, 1.0])
def test_fast_equals_reference_on_short_signals(seconds: float) -> None:
    assert_matches_reference(noise_waves([seconds], sample_rate=SAMPLE_RATE, seed=3)[0])


def test_real_speech_features_lie_in_the_iemocap_ranges(
    ravdess_paths: list[Path], iemocap_prosody: np.ndarray
) -> None:
    lo, hi = iemocap_prosody.min(axis=0), iemocap_prosody.max(axis=0)
    span = hi - lo
    features = Prosody8Encoder().encode_batch([load_44k(p) for p in ravdess_paths]).double().numpy()
    for j, name in enumerate(FEATURE_NAMES):
        assert (features[:, j] >= lo[j] - 0.5 * span[j]).all(), name
        assert (features[:, j] <= hi[j] + 0.5 * span[j]).all(), name
    assert ((features[:, 4] >= 0) & (features[:, 4] <= 1)).all()  # silence is a fraction


def test_silence_gives_finite_features_and_empty_audio_is_rejected() -> None:
    values = prosody8(np.zeros(SAMPLE_RATE, np.float32))
    assert np.isfinite(values).all() and values[0] == 0 and values[HARMONIC] == 0
    with pytest.raises(ValueError):
        prosody8(np.zeros(0, np.float32))


def test_encoder_shape_and_empty_batch() -> None:
    encoder = Prosody8Encoder()
    assert encoder.sample_rate == 44_100
    out = encoder.encode_batch(noise_waves([0.3, 0.8], sample_rate=SAMPLE_RATE))
    assert out.shape == (2, 8) and out.dtype == torch.float32
    assert encoder.encode_batch([]).shape == (0, 8)


def test_live_and_precomputed_encoders_share_the_prosody8_spec() -> None:
    live, column = Prosody8Encoder().spec, PrecomputedEncoder.prosody8().spec
    assert live == column and live.name == "prosody8" and live.dim == 8
    check_encoders_match({"audio": column}, {"audio": live})  # a table-trained model serves live


def test_precomputed_encoder_passes_the_iemocap_column_through() -> None:
    if not IEMOCAP_TABLE.is_file():
        pytest.skip(f"IEMOCAP table not found at {IEMOCAP_TABLE}")
    with IEMOCAP_TABLE.open() as f:
        rows = [json.loads(next(f))["prosody"] for _ in range(5)]
    out = PrecomputedEncoder.prosody8().encode_batch(rows)
    torch.testing.assert_close(out, torch.tensor(rows, dtype=torch.float32))


@pytest.mark.parametrize("bad", [None, [0.1] * 7, [float("nan")] * 8])
def test_precomputed_encoder_rejects_missing_or_malformed_vectors(bad: object) -> None:
    with pytest.raises(ValueError):
        PrecomputedEncoder.prosody8().encode_batch([[0.0] * 8, bad])  # type: ignore[list-item]
