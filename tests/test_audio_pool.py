"""The audio pool (`ServingContract.audio_weight`, `model.serving.audio_pooled`): a row with audio of its
own is answered by (1 - w) * its logits as sent + w * the same network's logits with every word of the
window hidden; rows without audio, and windows without words, are answered as before. The service and
`lpgnet evaluate` pool alike (here, and tests/test_serving_parity.py replays a pooled checkpoint), the
weight is part of the checkpoint's version, and `lpgnet pool-audio` sets it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.settings import Settings
from model.checkpoint import load_checkpoint, save_checkpoint, with_text_only
from model.config import TrainConfig
from model.evaluate import predict_checkpoint, prediction_rows
from model.features import DialogueFeatures, FeatureSet
from model.lpgnet import LPGNet, LPGNetConfig
from model.scoring import evaluate_settings, predict_dialogues, score
from model.serving import ServingContract, audio_pooled, module_network, served_network
from tests.app_fixtures import write_paired_checkpoint, write_tiny_checkpoint
from tests.test_serving_parity import assert_same, replay
from tests.test_text_only_network import _late_audio_corpus


def _modality_sum(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """A stand-in network whose logits tell what each row saw: 1 for words, 2 for audio."""
    return (tm.float() + 2 * am.float()).unsqueeze(-1).expand(*tm.shape, 3)


def test_rows_with_audio_mix_in_the_words_hidden_pass_and_others_stay() -> None:
    tm = torch.tensor([[True, True, False, True], [True, False, True, False]])
    am = torch.tensor([[True, False, True, False], [True, True, False, False]])
    t = torch.zeros(2, 4, 5)
    pooled = audio_pooled(_modality_sum, 0.25)(t, t, tm, am)[..., 0]
    # words + audio: 0.75 * 3 + 0.25 * 2; audio alone: 2 either way; words alone and empty rows unchanged
    assert pooled.tolist() == [[2.75, 1.0, 2.0, 1.0], [2.75, 2.0, 1.0, 0.0]]


def test_weight_zero_is_the_network_itself_and_the_router_still_applies() -> None:
    assert audio_pooled(_modality_sum, 0.0) is _modality_sum
    tm = torch.tensor([[True, True, True]])
    am = torch.tensor([[False, True, False]])
    t = torch.zeros(1, 3, 5)

    def text_net(*_: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 3, 3), -1.0)

    served = served_network(_modality_sum, text_net, ServingContract(audio_weight=0.5), causal=True)
    # row 0: no audio yet -> the text network; row 1: pooled (0.5 * 3 + 0.5 * 2); row 2: fused as sent
    assert served(t, t, tm, am)[0, :, 0].tolist() == [-1.0, 2.5, 1.0]


@pytest.mark.parametrize("context", ["causal", "bidirectional"])
def test_a_real_network_answers_audio_only_windows_unchanged_and_others_between_the_two_passes(
    context: str,
) -> None:
    torch.manual_seed(0)
    cfg = LPGNetConfig(text_dim=6, audio_dim=5, hidden=8, num_classes=3, context=context)
    net = module_network(LPGNet(cfg))
    t, a = torch.randn(2, 7, 6), torch.randn(2, 7, 5)
    am = torch.ones(2, 7, dtype=torch.bool)
    none = torch.zeros_like(am)
    # no words to hide: the same answers (to rounding: the two passes run as one batch)
    assert torch.allclose(audio_pooled(net, 0.6)(t, a, none, am), net(t, a, none, am), atol=1e-6)
    tm = torch.rand(2, 7) < 0.7
    pooled = audio_pooled(net, 0.6)(t, a, tm, am)
    expected = 0.4 * net(t, a, tm, am) + 0.6 * net(t, a, none, am)
    assert torch.allclose(pooled, expected, atol=1e-5)
    assert not torch.allclose(pooled, net(t, a, tm, am), atol=1e-3)  # the pool moved the answers


def test_validation_selection_scores_the_pooled_network_as_the_service_answers() -> None:
    """`evaluate_settings` (what training selects epochs on) and `predict_dialogues` given a module pool
    as the contract says: the same figures as the composed network, and other ones without the pool."""
    torch.manual_seed(1)
    model = LPGNet(LPGNetConfig(text_dim=6, audio_dim=5, hidden=8, num_classes=3))
    dialogues = [
        DialogueFeatures(
            f"d{i}",
            torch.randn(n, 6),
            torch.randn(n, 5),
            torch.rand(n) < 0.8,
            torch.ones(n, dtype=torch.bool),
            torch.randint(0, 3, (n,)),
            split="valid",
        )
        for i, n in enumerate((5, 9, 3))
    ]
    feats = FeatureSet(dialogues, ["a", "b", "c"], {"text": None, "audio": None})
    pooled, plain = ServingContract(window=4, audio_weight=0.5), ServingContract(window=4)
    composed = served_network(module_network(model), None, pooled, causal=True)
    want = predict_dialogues(composed, dialogues, contract=pooled, causal=True)
    got = predict_dialogues(model, dialogues, contract=pooled, causal=True)
    assert all(torch.allclose(g.probabilities, w.probabilities) for g, w in zip(got, want, strict=True))
    selected = evaluate_settings(model, feats, contract=pooled, causal=True, settings=["both"])
    assert selected["both"]["macro_f1"] == score(want, feats.labels)["macro_f1"]
    unpooled = predict_dialogues(model, dialogues, contract=plain, causal=True)
    moved = [(u.probabilities - w.probabilities).abs().max() for u, w in zip(unpooled, want, strict=True)]
    assert float(max(moved)) > 1e-3


def test_the_contract_refuses_a_weight_outside_zero_to_one_and_the_config_carries_it() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="audio_weight"):
            ServingContract(audio_weight=bad)
    cfg = TrainConfig().with_overrides(["serving.audio_weight=0.4"])
    assert cfg.serving.audio_weight == 0.4
    for other in ("model.modalities=text", "model.modalities=audio", "kind=linear"):  # nothing to pool
        with pytest.raises(ValueError, match="needs a fused network"):
            TrainConfig().with_overrides(["serving.audio_weight=0.4", other])
    assert TrainConfig.from_dict(cfg.to_dict()).serving == cfg.serving
    assert ServingContract.from_dict(cfg.serving.to_dict()) == cfg.serving
    assert ServingContract.from_dict({"window": 8, "storage": "float16"}).audio_weight == 0.0  # older files


def test_the_weight_changes_the_version_and_a_text_only_network_joins_a_pooled_checkpoint(
    tmp_path: Path, tiny_specs: dict[str, Any]
) -> None:
    plain = load_checkpoint(write_tiny_checkpoint(tmp_path / "fused.pt", tiny_specs, seed=3))
    before = plain.version
    plain.serving = ServingContract(audio_weight=0.3)
    pooled = load_checkpoint(save_checkpoint(plain, tmp_path / "pooled.pt"))
    assert pooled.serving.audio_weight == 0.3 and pooled.version != before
    plain.serving = ServingContract()
    assert load_checkpoint(save_checkpoint(plain, tmp_path / "again.pt")).version == before
    text = load_checkpoint(write_tiny_checkpoint(tmp_path / "text.pt", tiny_specs, seed=5, modalities="text"))
    paired = load_checkpoint(save_checkpoint(with_text_only(pooled, text), tmp_path / "paired.pt"))
    assert paired.serving.audio_weight == 0.3 and paired.text_only is not None
    text.serving = ServingContract(window=4)
    with pytest.raises(ValueError, match="serving contracts differ"):
        with_text_only(pooled, text)


def test_lpgnet_pool_audio_writes_a_checkpoint_the_service_answers_as_lpgnet_evaluate(
    tiny_specs: dict[str, Any],
    tmp_path: Path,
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    """A paired checkpoint pooled by the CLI, served on onnxruntime graphs: the replay of a call whose
    audio starts on its fourth turn matches evaluation; the text-only network's first three answers are
    untouched and the fused network's answers move."""
    from typer.testing import CliRunner

    from model.cli import cli
    from model.encoders.factory import checkpoint_encoders

    paired = write_paired_checkpoint(tmp_path, tiny_specs)
    pooled_path = tmp_path / "pooled.pt"
    done = CliRunner().invoke(cli, ["pool-audio", str(paired), "--weight", "0.5", "--out", str(pooled_path)])
    assert done.exit_code == 0, done.output
    pooled, plain = load_checkpoint(pooled_path), load_checkpoint(paired)
    assert pooled.serving.audio_weight == 0.5 and pooled.version != plain.version
    assert pooled.training["audio_weight_set"] == {"weight": 0.5, "previous_version": plain.version}
    again = CliRunner().invoke(
        cli, ["pool-audio", str(pooled_path), "--weight", "0.2", "--out", str(tmp_path / "b.pt")]
    )
    assert again.exit_code == 0, again.output
    repooled = load_checkpoint(tmp_path / "b.pt").training["audio_weight_set"]
    assert repooled["previous_version"] == plain.version  # still the version its figures were measured on

    corpus = _late_audio_corpus(tmp_path)
    client = start_client(make_settings(checkpoint=pooled_path, context_window=4, backend="auto"))
    described = client.get("/model").json()
    assert (described["audio_weight"], described["version"], described["backend"]) == (
        0.5,
        pooled.version,
        "onnx",
    )
    encoders = checkpoint_encoders(
        pooled.encoders, "tiny", device="cpu", precision="auto", backend="torch", tiny_dir=tiny_encoder_dir
    )
    common: dict[str, Any] = {"encoders": encoders, "cache_dir": tmp_path / "features"}
    _, features, _, preds = predict_checkpoint(pooled, corpus, "test", **common)
    assert_same(prediction_rows(features, preds), replay(client, corpus))
    before = predict_checkpoint(plain, corpus, "test", **common)[3][0].probabilities
    after = preds[0].probabilities
    assert torch.equal(after[:3], before[:3])  # no audio yet: the text-only network, not pooled
    assert (after[3:] - before[3:]).abs().max() > 1e-3

    refused = CliRunner().invoke(
        cli, ["pool-audio", str(paired), "--weight", "1.5", "--out", str(tmp_path / "x.pt")]
    )
    assert refused.exit_code == 2 and not (tmp_path / "x.pt").exists()
