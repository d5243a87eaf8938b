"""Emotion2VecEncoder on the tiny random emotion2vec: FunASR loads it offline, batching with padding
changes nothing, and the vectors equal FunASR's own `generate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from model.encoders.audio import resample
from model.encoders.emotion2vec import Emotion2VecEncoder, length_batches, load_funasr_model
from tests.conftest_encoders import noise_waves

MIXED_SECONDS = [0.5, 10.0, 1.3, 3.0, 0.77, 6.2]


def funasr_generate(encoder: Emotion2VecEncoder, wave: np.ndarray) -> torch.Tensor:
    result = encoder.funasr_model.generate(wave, granularity="utterance", extract_embedding=True)
    return torch.from_numpy(np.asarray(result[0]["feats"], dtype=np.float32))


def test_tiny_directory_loads_through_funasr_automodel(tiny_encoder_paths) -> None:
    from funasr import AutoModel

    threads = torch.get_num_threads()
    try:  # exactly how FunASR's users load a model directory (it resets torch's thread count)
        auto_model = AutoModel(model=str(tiny_encoder_paths.audio), disable_update=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert type(auto_model.model).__name__ == "Emotion2vec"
    assert auto_model.model.cfg.embed_dim == 32
    quiet = load_funasr_model(str(tiny_encoder_paths.audio), device=torch.device("cpu"))
    assert torch.get_num_threads() == threads
    assert quiet.model.state_dict().keys() == auto_model.model.state_dict().keys()


def test_tiny_spec(tiny_emotion2vec: Emotion2VecEncoder) -> None:
    spec = tiny_emotion2vec.spec
    assert (spec.name, spec.dim, spec.modality) == ("emotion2vec:tiny-emotion2vec", 32, "audio")
    assert tiny_emotion2vec.sample_rate == 16_000


def test_batched_equals_one_at_a_time_for_mixed_lengths(tiny_emotion2vec: Emotion2VecEncoder) -> None:
    waves = noise_waves(MIXED_SECONDS)
    batched = tiny_emotion2vec.encode_batch(waves)  # one padded batch of 0.5..10 s
    assert batched.shape == (len(waves), 32)
    for i, wave in enumerate(waves):
        single = tiny_emotion2vec.encode_batch([wave])[0]
        assert F.cosine_similarity(batched[i], single, dim=0) >= 0.999, f"{MIXED_SECONDS[i]} s"
        torch.testing.assert_close(batched[i], single, atol=1e-4, rtol=1e-4)


def test_one_at_a_time_equals_funasr_generate(tiny_emotion2vec: Emotion2VecEncoder) -> None:
    for seconds, wave in zip([0.5, 2.0, 10.0], noise_waves([0.5, 2.0, 10.0], seed=1), strict=True):
        ours = tiny_emotion2vec.encode_batch([wave])[0]
        theirs = funasr_generate(tiny_emotion2vec, wave)
        assert F.cosine_similarity(ours, theirs, dim=0) >= 0.999, f"{seconds} s"
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_real_speech_batched_equals_funasr_generate(
    tiny_emotion2vec: Emotion2VecEncoder, ravdess_paths: list[Path]
) -> None:
    waves = []
    for path in ravdess_paths[::5]:
        y, sr = sf.read(path, dtype="float32")
        waves.append(resample(y, sr, 16_000))
    batched = tiny_emotion2vec.encode_batch(waves)
    for i, wave in enumerate(waves):
        assert F.cosine_similarity(batched[i], funasr_generate(tiny_emotion2vec, wave), dim=0) >= 0.999


def test_small_batches_give_the_same_vectors(tiny_emotion2vec: Emotion2VecEncoder) -> None:
    waves = noise_waves([0.6, 2.5, 1.0, 4.0], seed=2)
    whole = tiny_emotion2vec.encode_batch(waves)
    limit = tiny_emotion2vec.max_batch_samples
    try:
        tiny_emotion2vec.max_batch_samples = 16_000 * 5  # forces several forward passes
        split = tiny_emotion2vec.encode_batch(waves)
    finally:
        tiny_emotion2vec.max_batch_samples = limit
    torch.testing.assert_close(whole, split, atol=1e-5, rtol=1e-5)


def test_silence_very_short_clips_and_empty_batches(tiny_emotion2vec: Emotion2VecEncoder) -> None:
    vectors = tiny_emotion2vec.encode_batch([np.zeros(16_000, np.float32), np.full(50, 0.1, np.float32)])
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()
    assert tiny_emotion2vec.encode_batch([]).shape == (0, 32)
    with pytest.raises(ValueError):
        tiny_emotion2vec.encode_batch([np.zeros(0, np.float32)])


def test_length_batches_bound_the_padded_size() -> None:
    lengths = [5, 100, 30, 30, 70, 1]
    groups = list(length_batches(lengths, max_padded=120))
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert longest * len(group) <= 120 or len(group) == 1


def test_directory_without_model_files_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Emotion2VecEncoder(tmp_path, device="cpu")
