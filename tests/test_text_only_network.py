"""A checkpoint may carry a text-only network for what a text-only client sends (`Checkpoint.text_only`).

The rows whose answer depends on no audio (causal: none among the rows up to it) are answered by a
network trained on text alone, the others by the fused network; the checkpoint file carries both and
its version covers both. The service (PyTorch or onnxruntime) and `lpgnet evaluate` route alike:
a replay through the HTTP API of a dialogue whose audio starts on its fourth turn matches evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.settings import Settings
from model.checkpoint import load_checkpoint, save_checkpoint, with_text_only
from model.evaluate import predict_checkpoint, prediction_rows
from model.serving import text_only_routed
from tests.app_fixtures import TINY_LABELS, wav_bytes, write_paired_checkpoint, write_tiny_checkpoint
from tests.test_serving_parity import assert_same, replay


def _constant(value: float) -> Callable[..., torch.Tensor]:
    def run(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        return torch.full((*tm.shape, 3), value)

    return run


def test_a_row_goes_to_the_text_only_network_while_no_audio_precedes_it() -> None:
    am = torch.tensor([[False, False, True, False], [False, False, False, False], [True, True, True, True]])
    t = torch.zeros(3, 4, 2)
    causal = text_only_routed(_constant(1.0), _constant(2.0), causal=True)(t, t, ~am, am)[..., 0]
    assert causal.tolist() == [[2, 2, 1, 1], [2, 2, 2, 2], [1, 1, 1, 1]]
    whole = text_only_routed(_constant(1.0), _constant(2.0), causal=False)(t, t, ~am, am)[..., 0]
    assert whole.tolist() == [[1, 1, 1, 1], [2, 2, 2, 2], [1, 1, 1, 1]]  # bidirectional: any audio at all


@pytest.fixture
def paired_checkpoint(tmp_path: Path, tiny_specs: dict[str, Any]) -> Path:
    return write_paired_checkpoint(tmp_path, tiny_specs)


def test_the_checkpoint_carries_the_text_only_network_and_versions_it(
    paired_checkpoint: Path, tmp_path: Path, tiny_specs: dict[str, Any]
) -> None:
    paired = load_checkpoint(paired_checkpoint)
    assert paired.text_only is not None and paired.text_only.cfg.modalities == "text"
    alone = save_checkpoint(paired.__class__(**{**vars(paired), "text_only": None}), tmp_path / "alone.pt")
    assert load_checkpoint(alone).version != paired.version  # both networks are in the version
    assert save_checkpoint(paired, tmp_path / "again.pt") and load_checkpoint(
        tmp_path / "again.pt"
    ).version == (paired.version)
    fused = load_checkpoint(alone)
    with pytest.raises(ValueError, match="not text-only"):
        with_text_only(fused, fused)
    with pytest.raises(ValueError, match="already"):  # re-pairing would lose the fused network's record
        with_text_only(
            paired, load_checkpoint(write_tiny_checkpoint(tmp_path / "t3.pt", tiny_specs, modalities="text"))
        )
    relabelled = load_checkpoint(write_tiny_checkpoint(tmp_path / "t2.pt", tiny_specs, modalities="text"))
    relabelled.labels = list(reversed(TINY_LABELS))
    with pytest.raises(ValueError, match="labels differ"):
        with_text_only(fused, relabelled)


def _late_audio_corpus(root: Path) -> Path:
    """A chat that turns into a call: text only for three turns, then text and audio (7 turns, K = 4)."""
    rows = []
    for turn in range(7):
        audio = None
        if turn >= 3:
            audio = f"call-{turn}.wav"
            (root / audio).write_bytes(wav_bytes(0.4 + 0.05 * turn, freq=170.0 + 25 * turn, seed=turn))
        text = f"turn {turn}: {'really ' * (turn % 3)}fine"
        rows.append(
            {
                "dialogue_id": "chat",
                "turn": turn,
                "text": text,
                "audio": audio,
                "label": TINY_LABELS[turn % 4],
            }
        )
    path = root / "late-audio.jsonl"
    path.write_text("".join(json.dumps({**r, "split": "test"}) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("backend", "context"), [("torch", "causal"), ("auto", "causal"), ("auto", "bidirectional")]
)
def test_a_replay_through_the_api_matches_lpgnet_evaluate_with_both_networks(
    backend: str,
    context: str,
    tiny_specs: dict[str, Any],
    tmp_path: Path,
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    """PyTorch and onnxruntime (both graphs exported and checked at start) answer what evaluation
    computes, causal or bidirectional (each answer from its window (i-K, i]); the first three turns are
    the text-only network's (they differ from the fused one's)."""
    from model.encoders.factory import checkpoint_encoders

    paired_checkpoint = write_paired_checkpoint(tmp_path, tiny_specs, context)
    corpus = _late_audio_corpus(tmp_path)
    settings = make_settings(checkpoint=paired_checkpoint, context_window=4, backend=backend)
    client = start_client(settings)
    described = client.get("/model").json()
    assert described["text_only_network"] is True
    assert described["backend"] == ("onnx" if backend == "auto" else "torch")  # both networks alike
    paired = load_checkpoint(paired_checkpoint)
    encoders = checkpoint_encoders(  # the service's encoders (make_settings: PyTorch, precision auto)
        paired.encoders, "tiny", device="cpu", precision="auto", backend="torch", tiny_dir=tiny_encoder_dir
    )
    common: dict[str, Any] = {"encoders": encoders, "cache_dir": tmp_path / "features"}
    _, features, _, preds = predict_checkpoint(paired, corpus, "test", **common)
    assert_same(prediction_rows(features, preds), replay(client, corpus))

    paired.text_only = None
    _, _, _, fused_preds = predict_checkpoint(paired, corpus, "test", **common)
    routed, fused = preds[0].probabilities, fused_preds[0].probabilities
    assert (routed[:3] - fused[:3]).abs().max() > 1e-3  # the text-only network answered these
    assert torch.allclose(routed[3:], fused[3:])  # audio arrived: the fused network's answers


def test_lpgnet_add_text_only_writes_the_pair_and_refuses_a_fused_text_network(
    tmp_path: Path, tiny_specs: dict[str, Any]
) -> None:
    from typer.testing import CliRunner

    from model.cli import cli

    fused = write_tiny_checkpoint(tmp_path / "fused.pt", tiny_specs, seed=1)
    text = write_tiny_checkpoint(tmp_path / "text.pt", tiny_specs, seed=2, modalities="text")
    done = CliRunner().invoke(
        cli, ["add-text-only", str(fused), str(text), "--out", str(tmp_path / "pair.pt")]
    )
    assert done.exit_code == 0, done.output
    assert load_checkpoint(tmp_path / "pair.pt").text_only is not None
    refused = CliRunner().invoke(
        cli, ["add-text-only", str(fused), str(fused), "--out", str(tmp_path / "x.pt")]
    )
    assert refused.exit_code == 2 and "not text-only" in refused.output
    assert not (tmp_path / "x.pt").exists()


def test_an_exported_bundle_carries_the_text_only_graph_and_the_service_needs_it(
    paired_checkpoint: Path,
    tmp_path: Path,
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    from model.export import MANIFEST, TEXT_ONLY_GRAPH, export_bundle

    bundle = export_bundle(paired_checkpoint, tmp_path / "bundle", tiny_dir=tiny_encoder_dir)
    assert json.loads((bundle / MANIFEST).read_text())["text_only"] == TEXT_ONLY_GRAPH
    settings = make_settings(
        checkpoint=paired_checkpoint, context_window=4, backend="onnx", onnx_model=bundle
    )
    described = start_client(settings).get("/model").json()
    assert (described["backend"], described["text_only_network"]) == ("onnx", True)
    (bundle / TEXT_ONLY_GRAPH).unlink()  # a bundle of the fused network alone cannot serve this checkpoint
    from app.runtime import StartupError

    with pytest.raises(StartupError, match=TEXT_ONLY_GRAPH):
        start_client(settings, ready=False)
