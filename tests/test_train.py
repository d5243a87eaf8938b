"""A short real training run on the shared IEMOCAP table, plus the harness's small parts.

Features: the table's precomputed prosody (through `PrecomputedEncoder`, spec prosody8) and a cheap
hashed bag-of-words text encoder defined here, so the run takes seconds and needs no model download.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from sklearn.feature_extraction.text import HashingVectorizer

from model.augment import as_sent, crop, drop_modalities, epoch_dialogues, neutral_text_pool
from model.checkpoint import load_checkpoint
from model.config import AugmentConfig, OptimConfig, SelectConfig
from model.data import read_iemocap_table
from model.encoders.base import EncoderSpec
from model.encoders.precomputed import PrecomputedEncoder
from model.features import FeatureCache, extract_features, normalization_stats
from model.losses import LossWeights
from model.lpgnet import LPGNetConfig
from model.paths import SHARED_ROOT
from model.serving import ServingContract
from model.train import TrainConfig, collate, train_one, train_seeds, weight_average

TABLE = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
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
    cfg = TrainConfig(
        model=LPGNetConfig(hidden=32, context="causal"),
        optim=OptimConfig(epochs=2, patience=2, batch_size=8, lr=3e-3),
        augment=AugmentConfig(modality_dropout=0.1, dialogue_modality_dropout=0.3, window=True),
        select=SelectConfig(modalities=("both", "text")),
    )
    result = train_seeds(
        features, cfg, [0], tmp_path, profile="test", data_info={"label_set": "iemocap4"}, progress=False
    )
    test = result["test"]["both"]
    run_test = result["runs"][0]["test"]
    assert run_test["both"]["n"] == run_test["text"]["n"] == 1241  # every session-5 label has text
    assert run_test["audio"]["labelled_read"]["total"] == 1241
    assert run_test["audio"]["n"] == 1239  # two labelled utterances have no prosody: never sent
    assert result["test"]["text"]["accuracy"]["mean"] > 0.4
    # chance is 0.25 (majority class 0.31): the model must clearly beat it
    assert test["accuracy"]["mean"] > 0.45, test
    assert test["binary_accuracy"]["mean"] == pytest.approx(1 - 2 * (1 - test["accuracy"]["mean"]) / 4)
    for name in (
        "model.pt",
        "seed0/model.pt",
        "metrics.json",
        "train.toml",
        "confusion.png",
        "learning_curve.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["splits"]["test"]["labelled"] == 1241
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt.labels == ["neutral", "happy", "sad", "angry"]
    assert ckpt.encoders["audio"].name == "prosody8" and ckpt.encoders["text"].name == "hashed-words"
    assert ckpt.context == "causal" and ckpt.profile == "test"
    assert 1 <= ckpt.training["selected_epoch"] <= 2
    assert ckpt.serving == ServingContract(window=64, storage="float16")
    assert TrainConfig.from_dict(ckpt.training["train_config"]) == cfg  # the run's config, whole
    assert TrainConfig.from_toml(tmp_path / "train.toml") == cfg
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
    cfg = TrainConfig(
        kind=model,
        model=LPGNetConfig(hidden=16, context=context),
        optim=OptimConfig(epochs=20, patience=20, lr=5e-3),
    )
    run = train_one(_toy_features(), cfg, seed=0)
    assert run.valid["both"]["accuracy"] > 0.9  # the selected epoch fits the split it was chosen on
    assert run.test["both"]["accuracy"] > 0.75  # and generalises (3 small dialogues: a loose bound)
    assert run.test["text"]["accuracy"] > 0.75  # text carries the signal: text alone holds up


@pytest.mark.parametrize("modalities", ["text", "audio"])
def test_unimodal_lpgnet_runs(modalities):
    cfg = TrainConfig(
        model=LPGNetConfig(modalities=modalities, hidden=8),
        optim=OptimConfig(epochs=2),
        loss=LossWeights(ce=0.5),
    )
    run = train_one(_toy_features(), cfg, seed=0)
    assert run.model.cfg.modalities == modalities and list(run.test) == [modalities]
    assert run.test[modalities]["n"] > 0


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


def test_as_sent_removes_utterances_left_without_a_modality():
    d = _toy_features().dialogues[0]
    d.text_mask[1] = False  # utterance 1: audio only
    d.audio_mask[2] = False  # utterance 2: text only
    text_only = as_sent(d, keep_text=True, keep_audio=False)
    assert len(text_only) == len(d) - 1 and not text_only.audio_mask.any()
    assert text_only.labels.tolist() == [y for i, y in enumerate(d.labels.tolist()) if i != 1]
    assert (text_only.audio == 0).all()
    audio_only = as_sent(d, keep_text=False, keep_audio=True)
    assert len(audio_only) == int(d.audio_mask.sum()) and not audio_only.text_mask.any()


def test_crop_takes_a_run_of_at_most_k_consecutive_utterances():
    import random

    d = _toy_features().dialogues[2]  # 8 utterances
    seen = set()
    for seed in range(30):
        c = crop(d, 3, random.Random(seed))
        assert len(c) == 3
        start = next(s for s in range(len(d) - 2) if torch.equal(d.text[s : s + 3], c.text))
        assert c.labels.tolist() == d.labels[start : start + 3].tolist()
        seen.add(start)
    assert len(seen) > 2  # different windows on different draws
    assert crop(d, 20, random.Random(0)) is d


def test_epoch_dialogues_sends_whole_dialogues_with_one_modality_and_weights_corpora():
    import random
    from dataclasses import replace

    fs = _toy_features()
    dialogues = [replace(d, corpus="a" if i % 2 else "b") for i, d in enumerate(fs.dialogues)]
    train = replace(fs, dialogues=dialogues)
    cfg = TrainConfig(
        augment=AugmentConfig(dialogue_modality_dropout=1.0, corpus_weights={"a": 2.0, "b": 0.5})
    )
    out = epoch_dialogues(train, cfg, random.Random(0))
    assert len(out) == 2 * 6 + 3  # corpus a twice, half of corpus b
    assert all(not (d.text_mask.any() and d.audio_mask.any()) for d in out)  # one modality each
    kinds = {bool(d.text_mask.any()) for d in out}
    assert kinds == {True, False}  # both text-only and audio-only dialogues occur


def test_neutral_words_keeps_voice_and_labels_and_takes_words_of_neutral_utterances():
    import random
    from dataclasses import replace

    fs = _toy_features()
    train = replace(fs, labels=["neutral", "happy"], dialogues=fs.split("train").dialogues)
    pool = neutral_text_pool(train, train.labels)
    assert pool is not None
    assert len(pool) == sum(int((d.labels == 0).sum()) for d in train.dialogues)  # text everywhere here
    assert neutral_text_pool(train, ["x", "y"]) is None
    cfg = TrainConfig(augment=AugmentConfig(neutral_words=1.0))
    out = {d.dialogue_id: d for d in epoch_dialogues(train, cfg, random.Random(0), pool)}
    pool_rows = {tuple(r.tolist()) for r in pool}
    for d in train.dialogues:
        got, voiced = out[d.dialogue_id], d.audio_mask
        assert torch.equal(got.labels, d.labels[voiced]) and torch.equal(got.audio, d.audio[voiced])
        assert bool(got.text_mask.all() and got.audio_mask.all())
        assert all(tuple(r.tolist()) in pool_rows for r in got.text)  # words of neutral utterances only
    happy_words = [d.text[d.labels == 1] for d in train.dialogues]
    assert not any(tuple(r.tolist()) in pool_rows for t in happy_words for r in t)
    with pytest.raises(ValueError, match="neutral_words"):
        epoch_dialogues(train, cfg, random.Random(0), None)


def test_neutral_scripts_give_a_dialogue_the_words_of_at_most_n_neutral_utterances():
    import random

    fs = _toy_features()
    train = replace(fs, labels=["neutral", "happy"], dialogues=fs.split("train").dialogues)
    pool = neutral_text_pool(train, train.labels)
    assert pool is not None
    distinct = {}
    for n in (0, 1, 2):
        cfg = TrainConfig(augment=AugmentConfig(neutral_words=1.0, neutral_scripts=n))
        out = epoch_dialogues(train, cfg, random.Random(0), pool)
        distinct[n] = max(len({tuple(r.tolist()) for r in d.text}) for d in out)
        for d in out:
            src = next(s for s in train.dialogues if s.dialogue_id == d.dialogue_id)
            assert torch.equal(d.labels, src.labels[src.audio_mask])  # voice and labels kept
    assert distinct[1] == 1 and distinct[2] <= 2 < distinct[0]
    for bad in (AugmentConfig(neutral_words=0.2, neutral_scripts=-1), AugmentConfig(neutral_scripts=2)):
        with pytest.raises(ValueError, match="neutral_scripts"):
            TrainConfig(augment=bad)


def test_train_config_round_trips_through_toml_and_takes_overrides(tmp_path):
    cfg = TrainConfig(
        model=LPGNetConfig(hidden=64, context="causal", recency_bias=True),
        augment=AugmentConfig(dialogue_modality_dropout=0.4, corpus_weights={"dailydialog": 0.1}),
        select=SelectConfig(modalities=("both", "text", "audio")),
    )
    path = tmp_path / "run.toml"
    path.write_text(cfg.to_toml())
    assert TrainConfig.from_toml(path) == cfg
    changed = cfg.with_overrides(["model.hidden=32", "optim.lr=5e-4", "augment.window=true", "kind=gru"])
    assert (changed.model.hidden, changed.optim.lr, changed.augment.window, changed.kind) == (
        32,
        5e-4,
        True,
        "gru",
    )
    with pytest.raises(ValueError, match="no field"):
        cfg.with_overrides(["model.hiden=32"])
    # tables as the config file writes them (TOML inline tables) or as Python dicts
    tables = cfg.with_overrides(
        [
            'augment.corpus_weights={"dailydialog" = 0.25, "iemocap" = 2}',
            "data.train_dialogues={'dailydialog': 40}",
        ]
    )
    assert tables.augment.corpus_weights == {"dailydialog": 0.25, "iemocap": 2}
    assert tables.data.train_dialogues == {"dailydialog": 40}
    with pytest.raises(ValueError, match="a table"):
        cfg.with_overrides(["augment.corpus_weights=dailydialog"])
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"optim": {"epochs": 3, "lr_typo": 1}})


DAILYDIALOG = SHARED_ROOT / "data" / "dailydialog" / "dailydialog.jsonl"


@pytest.mark.slow
@needs_table
@pytest.mark.skipif(not DAILYDIALOG.exists(), reason=f"shared DailyDialog absent ({DAILYDIALOG})")
def test_short_multi_corpus_run_beats_chance_on_both_corpora(tmp_path):
    """IEMOCAP + a slice of DailyDialog, class-balanced per corpus, selected on both validations."""
    from dataclasses import replace

    from model.data import combine_corpora, load_corpus
    from model.splits import first_train_dialogues

    dd = first_train_dialogues(load_corpus(DAILYDIALOG, "iemocap4"), 1500)
    dd = replace(
        dd, dialogues=[d for d in dd.dialogues if d.split == "train"] + dd.split("valid").dialogues[:200]
    )
    corpus = combine_corpora([read_iemocap_table(TABLE), dd])
    assert corpus.labels == ["neutral", "happy", "sad", "angry"]
    features = extract_features(
        corpus,
        {"text": HashedWords(), "audio": PrecomputedEncoder.prosody8()},
        FeatureCache(tmp_path),
        batch_size=512,
    )
    cfg = TrainConfig(
        model=LPGNetConfig(hidden=32, context="causal"),
        optim=OptimConfig(epochs=3, patience=3, batch_size=8, lr=3e-3),
        augment=AugmentConfig(
            class_weights=True, dialogue_modality_dropout=0.3, corpus_weights={"dailydialog": 0.5}
        ),
        select=SelectConfig(modalities=("iemocap/both", "dailydialog/text:unweighted_accuracy")),
    )
    run = train_one(features, cfg, seed=0)
    assert run.valid["dailydialog/text"]["labelled_scored"]["total"] > 1000
    assert run.valid["dailydialog/text"]["unweighted_accuracy"] > 0.31  # chance: 0.25 (83 % neutral)
    assert run.test["iemocap/both"]["accuracy"] > 0.45  # chance 0.25, majority class 0.31
    assert run.test["iemocap/both"]["n"] == 1241 and "dailydialog/both" not in run.test  # no DD test split


def test_weight_average_is_the_exponential_moving_average_of_weights_and_statistics():
    from model.lpgnet import MaskedBatchNorm

    torch.manual_seed(0)
    linear, norm = torch.nn.Linear(3, 4), MaskedBatchNorm(4)
    model = torch.nn.ModuleList([linear, norm])
    average = weight_average(model, 0.9)
    assert weight_average(model, 0.0) is None
    with pytest.raises(ValueError, match="optim.ema"):
        weight_average(model, 1.0)
    with pytest.raises(ValueError, match="optim.ema"):
        TrainConfig(optim=OptimConfig(ema=1.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = None
    for _ in range(4):
        model.train()
        x = torch.randn(2, 4, 3)
        loss = norm(linear(x), torch.ones(2, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        average.update_parameters(model)
        now = {k: v.detach().clone() for k, v in model.state_dict().items()}
        expected = now if expected is None else {k: 0.9 * expected[k] + 0.1 * now[k] for k in now}
    got = average.module.state_dict()
    for key in ("0.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(got[key], expected[key])
        assert not torch.allclose(got[key], model.state_dict()[key])  # an average, not the last step


def test_weight_averaging_selects_and_returns_the_average():
    from model.scoring import selection_score

    features = _toy_features()
    optim = OptimConfig(epochs=12, patience=12, lr=5e-3)
    plain = TrainConfig(model=LPGNetConfig(hidden=16), optim=optim)
    averaged = TrainConfig(model=LPGNetConfig(hidden=16), optim=replace(optim, ema=0.9))
    a, b = train_one(features, plain, seed=0), train_one(features, averaged, seed=0)
    assert b.valid["both"]["accuracy"] > 0.9 and b.test["both"]["accuracy"] > 0.75
    # the returned weights are the ones selected: scored again, they give the selected epoch's score
    sel = averaged.select
    assert selection_score(b.valid, sel.metric, sel.modalities, sel.per_corpus) == pytest.approx(b.score)
    # the same seed and steps: only the averaging differs, and it changes the returned weights
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert any(not torch.allclose(wa[k].float(), wb[k].float()) for k in wa)
