"""bf16 encoders on CPU: the parity bound that lets the service run them on fp32-trained weights.

Bound (issue: performance): cosine >= 0.99 between bf16 and fp32 vectors on real inputs, and >= 99%
of the offline profile's IEMOCAP test predictions unchanged. The committed checkpoint's text
encoder (MiniLM, real weights) is the model these predictions come from; emotion2vec is checked on
real speech with its production shape (random weights: the real ones cannot be downloaded here;
LPGNET_PARITY_EMOTION2VEC=DIR runs the same check on a real FunASR model directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.encoders.precision import has_native_bf16, resolve_bf16
from tests.conftest_encoders import IEMOCAP_TABLE

MIN_COSINE = 0.99
MIN_SAME_ARGMAX = 0.99


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).numpy()


@pytest.fixture
def cpu_features(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Pretend the x86 CPU has (or lacks) AVX512-BF16 and AMX; the cached answer is reset around it."""
    import model.encoders.precision as precision

    def set_features(*, avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        has_native_bf16.cache_clear()

    yield set_features
    has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_auto_uses_bf16_only_on_cpus_with_bf16_instructions(
    cpu_features: Callable[..., None], avx512_bf16: bool, amx: bool, native: bool
) -> None:
    """An AVX-512 CPU without AVX512-BF16/AMX only emulates bf16 (slower than fp32): auto stays fp32."""
    cpu_features(avx512_bf16=avx512_bf16, amx=amx)
    assert resolve_bf16("auto", torch.device("cpu")) is native
    assert resolve_bf16("bf16", torch.device("cpu")) and not resolve_bf16("fp32", torch.device("cpu"))


def test_bf16_is_refused_on_cuda_and_unknown_precisions_everywhere() -> None:
    assert not resolve_bf16("auto", torch.device("cuda"))
    with pytest.raises(ValueError, match="CUDA"):
        resolve_bf16("bf16", torch.device("cuda"))
    with pytest.raises(ValueError, match="precision"):
        resolve_bf16("int4", torch.device("cpu"))  # type: ignore[arg-type]


def test_bf16_is_a_runtime_choice_not_an_identity(tiny_encoder_paths: Any) -> None:
    from model.encoders.emotion2vec import Emotion2VecEncoder

    fp32 = Emotion2VecEncoder(tiny_encoder_paths.audio, device="cpu", precision="fp32")
    bf16 = Emotion2VecEncoder(tiny_encoder_paths.audio, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    assert bf16.spec == fp32.spec  # a checkpoint trained on fp32 features is served with bf16 ones


@pytest.fixture(scope="module")
def speech_16k(ravdess_paths: list[Path]) -> list[np.ndarray]:
    from model.encoders.audio import decode_audio, resample

    clips = [decode_audio(p.read_bytes(), max_seconds=60, max_bytes=1 << 26) for p in ravdess_paths[::4]]
    return [resample(c.waveform, c.sample_rate, 16_000) for c in clips]


@pytest.mark.slow
def test_emotion2vec_base_shape_bf16_vectors_keep_cosine_099_on_real_speech(
    speech_16k: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from bench.models import SHARED_E2V_CONFIG, write_emotion2vec_base
    from model.encoders.emotion2vec import Emotion2VecEncoder

    real = os.environ.get("LPGNET_PARITY_EMOTION2VEC")  # a real model directory, when one exists
    if real:
        directory = Path(real)
    else:
        if not SHARED_E2V_CONFIG.is_file():
            pytest.skip(f"emotion2vec base config not found at {SHARED_E2V_CONFIG} (../shared)")
        directory = tmp_path_factory.mktemp("e2v-base") / "emotion2vec-base"
        write_emotion2vec_base(directory)
    fp32 = Emotion2VecEncoder(directory, device="cpu", precision="fp32")
    bf16 = Emotion2VecEncoder(directory, device="cpu", precision="bf16")
    sims = cosines(bf16.encode_batch(speech_16k), fp32.encode_batch(speech_16k))
    assert sims.min() >= MIN_COSINE, sims


def test_tiny_emotion2vec_bf16_batches_like_fp32(
    speech_16k: list[np.ndarray], tiny_encoder_paths: Any
) -> None:
    """Padding under autocast: a batch of clips of different lengths keeps each clip's vector."""
    from model.encoders.emotion2vec import Emotion2VecEncoder

    bf16 = Emotion2VecEncoder(tiny_encoder_paths.audio, device="cpu", precision="bf16")
    fp32 = Emotion2VecEncoder(tiny_encoder_paths.audio, device="cpu", precision="fp32")
    batched = bf16.encode_batch(speech_16k)
    alone = torch.cat([bf16.encode_batch([w]) for w in speech_16k])
    assert cosines(batched, alone).min() >= MIN_COSINE
    assert cosines(batched, fp32.encode_batch(speech_16k)).min() >= MIN_COSINE


@pytest.mark.slow
def test_default_profile_bf16_keeps_99_percent_of_iemocap_test_predictions(minilm_dir: Path) -> None:
    """The committed checkpoint on IEMOCAP session 5, text encoded in fp32 and in bf16."""
    if not IEMOCAP_TABLE.is_file():
        pytest.skip(f"IEMOCAP table not found at {IEMOCAP_TABLE} (../shared beside the repository)")
    from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from model.data import load_corpus
    from model.encoders.profiles import build_encoders
    from model.features import extract_features

    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    assert ckpt.profile == "offline-tuned"
    corpus = load_corpus(IEMOCAP_TABLE, ckpt.labels).split("test")
    predictions, text_vectors = {}, {}
    for precision in ("fp32", "bf16"):
        encoders = build_encoders(ckpt.profile, device="cpu", precision=precision)  # type: ignore[arg-type]
        features = extract_features(corpus, encoders, cache=None)  # no cache: it is keyed by spec only
        text_vectors[precision] = torch.cat([d.text[d.text_mask] for d in features.dialogues])
        with torch.inference_mode():
            predictions[precision] = torch.cat(
                [
                    ckpt.model(d.text[None], d.audio[None], d.text_mask[None], d.audio_mask[None])
                    .logits[0]
                    .argmax(-1)[d.labels >= 0]
                    for d in features.dialogues
                ]
            )
    assert len(predictions["fp32"]) > 1000  # session 5's labelled utterances
    assert cosines(text_vectors["bf16"], text_vectors["fp32"]).min() >= MIN_COSINE
    same = float((predictions["bf16"] == predictions["fp32"]).double().mean())
    assert same >= MIN_SAME_ARGMAX, same
