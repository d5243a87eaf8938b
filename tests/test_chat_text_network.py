"""A checkpoint may carry a second, chat-trained text network beside its text-only one (`chat_text`).

Every row whose answer depends on no audio is then answered by whichever of the two text networks has
been more confident over its window (`model.serving.confidence_routed`): the sum over the window's rows
of one's top probability minus the other's. The window alone decides, so the service (one window per
answer, PyTorch or onnxruntime) and `lpgnet evaluate` (one pass over the first K) answer alike.
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
from model.checkpoint import as_text_checkpoint, load_checkpoint, save_checkpoint, with_chat_text
from model.evaluate import predict_checkpoint, prediction_rows
from model.serving import ServingContract, confidence_routed, served_network
from tests.app_fixtures import TINY_LABELS, write_paired_checkpoint, write_tiny_checkpoint
from tests.test_serving_parity import assert_same, replay


def _rows(top: list[list[float]]) -> Callable[..., torch.Tensor]:
    """A network whose row u of window b puts logit top[b][u] on class 0 and 0 on the other two."""

    def run(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tm.shape, 3)
        logits[..., 0] = torch.tensor(top)
        return logits

    return run


def test_each_row_goes_to_the_network_more_confident_over_its_window() -> None:
    # first: sure of rows 0-1, unsure after; second: unsure of rows 0-1, sure of rows 2-4
    first, second = _rows([[4.0, 4.0, 0.0, 0.0, 0.0]]), _rows([[0.0, 0.0, 4.0, 4.0, 4.0]])
    present = torch.tensor([[True] * 5])
    t = torch.zeros(1, 5, 2)
    causal = confidence_routed(first, second, causal=True)(t, t, present, ~present)[0, :, 0]
    # the sums of margins up to each row: +m, +2m, +m, 0 (a tie: first), -m (second is ahead)
    assert causal.tolist() == [4.0, 4.0, 0.0, 0.0, 4.0]
    whole = confidence_routed(first, second, causal=False)(t, t, present, ~present)[0, :, 0]
    assert whole.tolist() == [0.0, 0.0, 4.0, 4.0, 4.0]  # over the whole window (-m): second everywhere
    # a row that is not there (padding, or an utterance without text in a text-only window) counts for nothing
    absent = torch.tensor([[True, True, False, False, True]])
    routed = confidence_routed(first, second, causal=True)(t, t, absent, torch.zeros_like(absent))[0, :, 0]
    assert routed[4] == 0.0  # +2m - m: still first's, where counting rows 2-3 would have made it second's


def test_served_network_routes_text_rows_only_and_needs_a_text_only_network() -> None:
    fused, first, second = _rows([[1.0, 1.0, 1.0]]), _rows([[0.0, 0.0, 0.0]]), _rows([[6.0, 6.0, 6.0]])
    net = served_network(fused, first, ServingContract(), causal=True, chat_text=second)
    tm = torch.tensor([[True, True, True]])
    am = torch.tensor([[False, True, False]])
    t = torch.zeros(1, 3, 2)
    # row 0 has no audio up to it: the more confident text network (second); rows 1-2: fused
    assert net(t, t, tm, am)[0, :, 0].tolist() == [6.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="beside a text-only network"):
        served_network(fused, None, ServingContract(), causal=True, chat_text=second)


def _with_chat(tmp_path: Path, tiny_specs: dict[str, Any], context: str = "causal") -> Path:
    paired = load_checkpoint(write_paired_checkpoint(tmp_path, tiny_specs, context))
    chat = load_checkpoint(
        write_tiny_checkpoint(tmp_path / "chat.pt", tiny_specs, seed=11, modalities="text", context=context)
    )
    chat.serving = paired.serving
    return save_checkpoint(with_chat_text(paired, chat), tmp_path / "with-chat.pt")


def test_the_checkpoint_carries_the_chat_text_network_and_versions_it(
    tmp_path: Path, tiny_specs: dict[str, Any]
) -> None:
    path = _with_chat(tmp_path, tiny_specs)
    ckpt = load_checkpoint(path)
    assert ckpt.chat_text is not None and ckpt.chat_text.cfg.modalities == "text"
    assert set(ckpt.text_networks()) == {"text_only", "chat_text"}
    without = load_checkpoint(tmp_path / "paired.pt")
    assert without.chat_text is None and without.version != ckpt.version  # the chat network is versioned
    save_checkpoint(ckpt, tmp_path / "again.pt")
    assert load_checkpoint(tmp_path / "again.pt").version == ckpt.version
    assert ckpt.training["chat_text"]["version"] == load_checkpoint(tmp_path / "chat.pt").version
    with pytest.raises(ValueError, match="chat text network already"):
        with_chat_text(ckpt, load_checkpoint(tmp_path / "chat.pt"))
    fused = load_checkpoint(tmp_path / "fused.pt")
    with pytest.raises(ValueError, match="no text-only network"):
        with_chat_text(fused, load_checkpoint(tmp_path / "chat.pt"))
    # a paired file's text network, taken out again: its own weights and recorded version
    taken = as_text_checkpoint(without)
    assert taken.model is without.text_only and taken.version == without.training["text_only"]["version"]
    assert taken.version == load_checkpoint(tmp_path / "text.pt").version
    with pytest.raises(ValueError, match="carries none"):
        as_text_checkpoint(fused)


def _chat_corpus(root: Path) -> Path:
    """A written chat of 9 turns (K = 4: the service's windows slide over it)."""
    words = [
        "hello there",
        "I am so angry",
        "why",
        "this is great",
        "sad news today",
        "ok",
        "fine",
        "no!",
        "yes",
    ]
    rows = [
        {"dialogue_id": "chat", "turn": i, "text": w, "label": TINY_LABELS[i % 4], "split": "test"}
        for i, w in enumerate(words)
    ]
    path = root / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_chat_replay_through_the_api_matches_lpgnet_evaluate_with_both_text_networks(
    backend: str,
    tiny_specs: dict[str, Any],
    tmp_path: Path,
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    from model.encoders.factory import checkpoint_encoders

    path = _with_chat(tmp_path, tiny_specs)
    corpus = _chat_corpus(tmp_path)
    client = start_client(make_settings(checkpoint=path, context_window=4, backend=backend))
    described = client.get("/model").json()
    assert described["text_only_network"] is True and described["chat_text_network"] is True
    assert described["backend"] == ("onnx" if backend == "auto" else "torch")  # all three networks alike
    ckpt = load_checkpoint(path)
    encoders = checkpoint_encoders(
        ckpt.encoders, "tiny", device="cpu", precision="auto", backend="torch", tiny_dir=tiny_encoder_dir
    )
    common: dict[str, Any] = {"encoders": encoders, "cache_dir": tmp_path / "features", "modalities": "text"}
    _, features, _, preds = predict_checkpoint(ckpt, corpus, "test", **common)
    assert_same(prediction_rows(features, preds), replay(client, corpus))
    # every answer is one of the two text networks' answers for that window
    chat, first_network = ckpt.chat_text, ckpt.text_only
    ckpt.chat_text = None
    _, _, _, first = predict_checkpoint(ckpt, corpus, "test", **common)
    ckpt.text_only = chat
    _, _, _, second = predict_checkpoint(ckpt, corpus, "test", **common)
    routed, one, two = preds[0].probabilities, first[0].probabilities, second[0].probabilities
    rows = list(zip(routed, one, two, strict=True))
    assert all(torch.allclose(r, x) or torch.allclose(r, y) for r, x, y in rows)
    assert not torch.allclose(one, two)  # the two networks do differ here
    # made far surer of itself (its logits x 20), the chat network answers every window instead
    ckpt.text_only, ckpt.chat_text = first_network, chat
    with torch.no_grad():
        chat.classifier.weight.mul_(20.0)
        chat.classifier.bias.mul_(20.0)
    _, _, _, sure = predict_checkpoint(ckpt, corpus, "test", **common)
    ckpt.text_only = chat
    ckpt.chat_text = None
    _, _, _, sure_alone = predict_checkpoint(ckpt, corpus, "test", **common)
    assert torch.allclose(sure[0].probabilities, sure_alone[0].probabilities)


def test_add_text_only_with_a_chat_text_network_and_its_exported_graph(
    tmp_path: Path,
    tiny_specs: dict[str, Any],
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    from typer.testing import CliRunner

    from app.runtime import StartupError
    from model.cli import cli
    from model.export import CHAT_TEXT_GRAPH, MANIFEST, export_bundle

    paired = write_paired_checkpoint(tmp_path, tiny_specs)  # fused.pt, text.pt, paired.pt
    other = write_tiny_checkpoint(tmp_path / "other-text.pt", tiny_specs, seed=7, modalities="text")
    chat_file = tmp_path / "chat-file.pt"
    assert (
        CliRunner()
        .invoke(  # a "chat checkpoint": the fused network and another text network
            cli, ["add-text-only", str(tmp_path / "fused.pt"), str(other), "--out", str(chat_file)]
        )
        .exit_code
        == 0
    )
    out = tmp_path / "triple.pt"
    done = CliRunner().invoke(
        cli,
        ["add-text-only", str(tmp_path / "fused.pt"), str(tmp_path / "text.pt"), "--out", str(out)]
        + ["--chat-text", str(chat_file)],
    )
    assert done.exit_code == 0, done.output
    triple = load_checkpoint(out)
    assert triple.chat_text is not None
    other_state, chat_state = load_checkpoint(other).model.state_dict(), triple.chat_text.state_dict()
    assert all(other_state[k].equal(chat_state[k]) for k in other_state)  # the chat file's text network
    refused = CliRunner().invoke(
        cli,
        [
            "add-text-only",
            str(tmp_path / "fused.pt"),
            str(tmp_path / "text.pt"),
            "--out",
            str(tmp_path / "x.pt"),
        ]
        + ["--chat-text", str(tmp_path / "fused.pt")],
    )
    assert refused.exit_code == 2 and "carries none" in refused.output and not (tmp_path / "x.pt").exists()
    assert paired.is_file()

    bundle = export_bundle(out, tmp_path / "bundle", tiny_dir=tiny_encoder_dir)
    assert json.loads((bundle / MANIFEST).read_text())["chat_text"] == CHAT_TEXT_GRAPH
    settings = make_settings(checkpoint=out, context_window=4, backend="onnx", onnx_model=bundle)
    described = start_client(settings).get("/model").json()
    assert (described["backend"], described["chat_text_network"]) == ("onnx", True)
    (bundle / CHAT_TEXT_GRAPH).unlink()
    with pytest.raises(StartupError, match=CHAT_TEXT_GRAPH):
        start_client(settings, ready=False)
