"""A checkpoint rebuilds the exact model, with its labels, encoders and statistics."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.encoders.base import EncoderSpec
from model.lpgnet import LPGNet, LPGNetConfig

SPECS = {
    "text": EncoderSpec("hf:tiny-bert:cls", "abc", 6, "text"),
    "audio": EncoderSpec("prosody8", "1", 5, "audio"),
}


def build(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    model = LPGNet(LPGNetConfig(text_dim=6, audio_dim=5, hidden=8, num_classes=3, context="causal"))
    model.set_normalization({"audio": {"mean": torch.arange(5.0), "std": torch.full((5,), 2.0)}})
    return Checkpoint(
        model=model, labels=["a", "b", "c"], encoders=SPECS, profile="tiny", training={"seed": seed}
    )


def test_round_trip_restores_outputs_labels_and_specs(tmp_path):
    ckpt = build()
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    back = load_checkpoint(path)
    assert not back.model.training
    assert back.labels == ["a", "b", "c"]
    assert back.encoders == SPECS
    assert back.profile == "tiny" and back.context == "causal"
    assert back.version == ckpt.version and len(back.version) == 12
    assert back.model.normalization()["audio"]["std"] == [2.0] * 5
    x = (
        torch.randn(1, 4, 6),
        torch.randn(1, 4, 5),
        torch.ones(1, 4, dtype=torch.bool),
        torch.ones(1, 4, dtype=torch.bool),
    )
    torch.testing.assert_close(back.model(*x).logits, ckpt.model.eval()(*x).logits)


def test_version_changes_with_the_weights(tmp_path):
    a = build(0)
    b = build(1)
    save_checkpoint(a, tmp_path / "a.pt")
    save_checkpoint(b, tmp_path / "b.pt")
    assert a.version != b.version


def test_label_count_must_match_the_classifier(tmp_path):
    ckpt = build()
    ckpt.labels = ["a", "b"]
    with pytest.raises(ValueError, match="2 labels"):
        save_checkpoint(ckpt, tmp_path / "m.pt")
