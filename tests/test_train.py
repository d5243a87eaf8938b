"""A short real training run on the shared IEMOCAP table, plus the harness's small parts.

Features: the table's precomputed prosody (through `PrecomputedEncoder`, spec prosody8) and a cheap
hashed bag-of-words text encoder defined here, so the run takes seconds and needs no model download.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.feature_extraction.text import HashingVectorizer

from model.checkpoint import load_checkpoint
from model.data import read_iemocap_table
from model.encoders.base import EncoderSpec
from model.encoders.precomputed import PrecomputedEncoder
from model.features import FeatureCache, extract_features, normalization_stats
from model.losses import LossWeights
from model.train import TrainConfig, collate, drop_modalities, train_one, train_seeds

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TABLE = SHARED / "data" / "iemocap" / "utterances.jsonl"
needs_table = pytest.mark.skipif(not TABLE.exists(), reason=f"shared IEMOCAP table absent ({TABLE})")


class HashedWords:
    """Text encoder: l2-normalised hashed bag of words (256-d). Counts its calls."""

    sample_rate = None

    def __init__(self) -> None:
        self.spec = EncoderSpec("hashed-words", "1", 256, "text")
        self.vectorizer = HashingVectorizer(n_features=256, alternate_sign=False, norm="l2")
        self.encoded = 0

    def encode_batch(self, items):
        self.encoded += len(items)
        return torch.from_numpy(self.vectorizer.transform(list(items)).toarray().astype("float32"))


@pytest.fixture(scope="module")
def iemocap_features(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    text = HashedWords()
    corpus = read_iemocap_table(TABLE)
    cache = FeatureCache(cache_dir)
    features = extract_features(
        corpus, {"text": text, "audio": PrecomputedEncoder.prosody8()}, cache, batch_size=512
    )
    return features, text, cache, cache_dir, corpus


@needs_table
def test_features_cover_text_and_prosody_with_the_documented_gaps(iemocap_features):
    features, *_ = iemocap_features
    n = sum(len(d) for d in features.dialogues)
    assert n == 10039
    assert sum(int(d.text_mask.sum()) for d in features.dialogues) == 10039 - 2512  # null transcripts
    assert sum(int(d.audio_mask.sum()) for d in features.dialogues) == 10039 - 8  # null prosody
    assert sum(int((d.labels >= 0).sum()) for d in features.dialogues) == 5531


@needs_table
def test_second_extraction_is_served_entirely_from_the_cache(iemocap_features):
    _, text, _, cache_dir, corpus = iemocap_features
    first = text.encoded
    assert first > 0
    again = FeatureCache(cache_dir)
    extract_features(corpus, {"text": text, "audio": PrecomputedEncoder.prosody8()}, again, batch_size=512)
    assert text.encoded == first  # nothing re-encoded
    assert again.misses == 0 and again.hits == 10039 - 2512


@needs_table
def test_short_real_run_beats_chance_on_session5_and_writes_its_outputs(iemocap_features, tmp_path):
    features, *_ = iemocap_features
    cfg = TrainConfig(hidden=32, epochs=2, patience=2, batch_size=8, lr=3e-3, modality_dropout=0.1, threads=1)
    result = train_seeds(
        features, cfg, [0], tmp_path, profile="test", data_info={"label_set": "iemocap4"}, progress=False
    )
    test = result["test"]
    assert result["runs"][0]["test"]["n"] == 1241
    # chance is 0.25 (majority class 0.31): the model must clearly beat it
    assert test["accuracy"]["mean"] > 0.45, test
    assert test["binary_accuracy"]["mean"] == pytest.approx(1 - 2 * (1 - test["accuracy"]["mean"]) / 4)
    for name in ("model.pt", "seed0/model.pt", "metrics.json", "confusion.png", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["splits"]["test"]["labelled"] == 1241
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt.labels == ["neutral", "happy", "sad", "angry"]
    assert ckpt.encoders["audio"].name == "prosody8" and ckpt.encoders["text"].name == "hashed-words"
    assert ckpt.context == "causal" and ckpt.profile == "test"
    assert 1 <= ckpt.training["selected_epoch"] <= 2
    stats = normalization_stats(features.split("train"))  # training split only
    assert torch.allclose(ckpt.model.audio_norm.mean, stats["audio"]["mean"])


def _toy_features():
    from model.features import DialogueFeatures, FeatureSet

    g = torch.Generator().manual_seed(0)
    dialogues = []
    for i in range(12):
        u = 6 + i % 3
        labels = torch.randint(0, 2, (u,), generator=g)
        text = torch.randn(u, 5, generator=g) + labels.unsqueeze(1) * 3.0  # separable
        audio = torch.randn(u, 3, generator=g)
        split = "valid" if i % 4 == 0 else ("test" if i % 4 == 1 else "train")
        dialogues.append(
            DialogueFeatures(
                f"d{i}",
                text,
                audio,
                torch.ones(u, dtype=torch.bool),
                torch.rand(u, generator=g) > 0.2,
                labels,
                split,
            )
        )
    return FeatureSet(dialogues, ["x", "y"], {"text": None, "audio": None})


@pytest.mark.parametrize("model", ["lpgnet", "linear", "gru"])
@pytest.mark.parametrize("context", ["causal", "bidirectional"])
def test_every_model_learns_a_separable_toy_task(model, context):
    cfg = TrainConfig(model=model, context=context, hidden=16, epochs=20, patience=20, lr=5e-3)
    run = train_one(_toy_features(), cfg, seed=0)
    assert run.valid["accuracy"] > 0.9  # the selected epoch fits the split it was chosen on
    assert run.test["accuracy"] > 0.75  # and generalises (3 small dialogues: a loose bound)


@pytest.mark.parametrize("modalities", ["text", "audio"])
def test_unimodal_lpgnet_runs(modalities):
    cfg = TrainConfig(modalities=modalities, hidden=8, epochs=2, loss=LossWeights(ce=0.5))
    run = train_one(_toy_features(), cfg, seed=0)
    assert run.model.cfg.modalities == modalities and run.test["n"] > 0


def test_collate_pads_with_no_modality_and_no_label():
    fs = _toy_features()
    b = collate(fs.dialogues[:3])  # lengths 6, 7, 8
    assert b.text.shape == (3, 8, 5) and b.audio.shape == (3, 8, 3)
    assert not b.text_mask[0, 6:].any() and not b.audio_mask[0, 6:].any()
    assert (b.labels[0, 6:] == -1).all() and (b.labels[2] >= 0).all()


def test_modality_dropout_never_removes_both_modalities():
    tm = torch.ones(200, 50, dtype=torch.bool)
    am = torch.rand(200, 50) > 0.1
    t2, a2 = drop_modalities(tm, am, 0.6, torch.Generator().manual_seed(0))
    assert (t2 | a2).equal(tm | am)  # every utterance keeps at least what it had of one modality
    dropped = (tm & am).sum() - (t2 & a2).sum()
    assert 0.5 < dropped / (tm & am).sum() < 0.7
    assert not (t2 & ~tm).any() and not (a2 & ~am).any()
