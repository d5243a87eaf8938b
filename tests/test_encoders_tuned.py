"""The tuned text encoder: training-split examples only, stratified caps, tuning that learns, a delta
that materialises into a model folder the ordinary text encoder loads, and refusal of a wrong base."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from model.data import Corpus, Dialogue, Utterance
from model.encoders.text import HFTextEncoder
from model.encoders.tuned import (
    Example,
    TuneConfig,
    cap_examples,
    materialise,
    read_delta_metadata,
    save_delta,
    tune_text,
    tuning_examples,
)
from model.labels import get_label_set

WORDS = {0: "calm plain ordinary usual", 1: "wonderful great lovely joy", 2: "awful terrible furious hate"}


def _examples(n: int) -> list[Example]:
    return [Example(f"{WORDS[i % 3]} number {i}", i % 3, "toy") for i in range(n)]


def _corpus() -> Corpus:
    dialogues = [
        Dialogue(
            f"d-{split}",
            [
                Utterance(f"{split}-1", text="fine", label="neutral"),
                Utterance(f"{split}-2", text="", label="sad"),
            ],
            split=split,
        )
        for split in ("train", "valid", "test")
    ]
    return Corpus("toy", dialogues, get_label_set("iemocap4"))


def test_tuning_examples_come_from_training_splits_only() -> None:
    examples = tuning_examples([_corpus()])
    assert [e.text for e in examples] == ["fine"]  # the empty transcript is no example; valid/test unseen
    assert examples[0].label == _corpus().labels.index("neutral")
    with pytest.raises(ValueError, match="training splits only"):
        tuning_examples([_corpus()], splits=("train", "valid"))


def test_caps_keep_rare_classes_whole_and_fill_with_the_frequent_one() -> None:
    examples = [Example(f"n{i}", 0, "dd") for i in range(80)] + [Example(f"h{i}", 1, "dd") for i in range(5)]
    examples += [Example(f"x{i}", 2, "other") for i in range(7)]
    kept = cap_examples(examples, {"dd": 20}, seed=0)
    dd = [e for e in kept if e.corpus == "dd"]
    assert len(dd) == 20
    assert sum(e.label == 1 for e in dd) == 5  # all of the rare class
    assert sum(e.corpus == "other" for e in kept) == 7  # uncapped corpus untouched


def test_tuning_learns_and_the_delta_serves_through_the_text_encoder(
    tiny_encoder_paths, tmp_path: Path
) -> None:
    base = tiny_encoder_paths.text
    examples = _examples(48)
    config = TuneConfig(layers=1, epochs=8, lr=5e-3, head_lr=1e-2, batch_size=8, label_smoothing=0.0)
    delta = tune_text(base, examples, 3, config)
    assert delta and all(name.startswith("encoder.layer.1.") for name in delta)  # only the top layer

    path = save_delta(
        tmp_path / "toy-v1.safetensors", delta, base, config=config, classes=["a", "b", "c"], corpora=["toy"]
    )
    meta = read_delta_metadata(path)
    assert '"layers": 1' in meta["config"]
    folder = materialise(path, base, root=tmp_path / "cache")
    assert materialise(path, base, root=tmp_path / "cache") == folder  # written once

    frozen = HFTextEncoder(base, device="cpu")
    tuned = HFTextEncoder(folder, name=frozen.spec.name.split(":")[1], device="cpu")
    assert tuned.spec.name == frozen.spec.name and tuned.spec.version != frozen.spec.version  # new weights
    texts = [e.text for e in examples]
    labels = torch.tensor([e.label for e in examples])

    def separation(encoder: HFTextEncoder) -> float:
        """Between-class over within-class spread of the sentence vectors (higher: classes apart)."""
        v = encoder.encode_batch(texts)
        centres = torch.stack([v[labels == c].mean(0) for c in range(3)])
        within = torch.stack([(v[labels == c] - centres[c]).norm(dim=1).mean() for c in range(3)]).mean()
        return float(torch.pdist(centres).mean() / within)

    assert separation(tuned) > separation(frozen)


def test_a_delta_refuses_other_base_weights(tiny_encoder_paths, tmp_path: Path) -> None:
    base = tiny_encoder_paths.text
    config = TuneConfig(layers=1, epochs=1, batch_size=8)
    delta = tune_text(base, _examples(8), 3, config)
    path = save_delta(
        tmp_path / "d.safetensors", delta, base, config=config, classes=["a", "b", "c"], corpora=[]
    )
    other = tmp_path / "other"
    shutil.copytree(base, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(other / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 1.0
    save_file(weights, str(other / "model.safetensors"))
    with pytest.raises(ValueError, match="other weights"):
        materialise(path, other, root=tmp_path / "cache")
