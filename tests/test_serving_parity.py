"""Serving = evaluation: dialogues replayed through the HTTP API (engine, store, network) answer what
`lpgnet evaluate` computes offline for the same utterances, to 1e-4, on the memory and Redis stores.

Three replays: a tiny checkpoint whose window (K = 4) is shorter than the dialogues, with text-only,
audio-only and two-modality utterances (real WAV uploads), with and without an audio pool; the
committed default checkpoint on a 91-utterance IEMOCAP session-5 dialogue sent text-only, the way a
chatbot sends it (K = 64); and the default checkpoint on one unseen RAVDESS actor's real recordings
(FLAC, 48 kHz), audio only and with the spoken sentence, as the model card's RAVDESS figures are
computed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.settings import Settings
from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from model.data import write_jsonl
from model.evaluate import predict_checkpoint, prediction_rows
from model.paths import SHARED_ROOT
from model.ravdess import read_ravdess
from model.serving import ServingContract
from tests.app_fixtures import TINY_LABELS, wav_bytes, write_tiny_checkpoint

IEMOCAP = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
RAVDESS = SHARED_ROOT / "data" / "speech" / "ravdess-01-12"
TOLERANCE = 1e-4


def write_mixed_corpus(root: Path) -> Path:
    """Two dialogues (9 and 6 utterances) mixing text-only, audio-only and both, with WAV files."""
    rows = []
    for d, length in (("call-a", 9), ("call-b", 6)):
        for turn in range(length):
            kind = ("both", "text", "audio")[(turn + len(d)) % 3]
            audio = None
            if kind != "text":
                audio = f"{d}-{turn}.wav"
                (root / audio).write_bytes(wav_bytes(0.4 + 0.05 * turn, freq=180.0 + 30 * turn, seed=turn))
            rows.append(
                {
                    "dialogue_id": d,
                    "turn": turn,
                    "text": None if kind == "audio" else f"turn {turn} of {d}: {'why ' * (turn % 4)}now",
                    "audio": audio,
                    "label": TINY_LABELS[turn % len(TINY_LABELS)],
                    "split": "test",
                }
            )
    path = root / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def replay(client: TestClient, corpus: Path, modalities: str = "both") -> dict[str, dict[str, float]]:
    """POST every utterance of the corpus in order; utterance_id -> answered probabilities."""
    answers = {}
    for line in corpus.read_text().splitlines():
        r = json.loads(line)
        text = r.get("text") or r.get("transcript")
        audio = r.get("audio")
        body: dict[str, Any] = {"utterance_id": r.get("utterance_id") or f"{r['dialogue_id']}_{r['turn']}"}
        if text is not None and modalities != "audio":
            body["transcript"] = text
        if audio is not None and modalities != "text":
            body["audio_base64"] = base64.b64encode((corpus.parent / audio).read_bytes()).decode()
        if len(body) == 1:
            continue  # nothing this client would send
        response = client.post(f"/conversations/{r['dialogue_id']}/utterances", json=body)
        assert response.status_code == 200, response.text
        answers[body["utterance_id"]] = response.json()["probabilities"]
    return answers


def assert_same(offline: list[dict[str, Any]], served: dict[str, dict[str, float]]) -> None:
    assert [r["utterance_id"] for r in offline] == list(served)  # the same utterances, in order
    worst = max(
        abs(r["probabilities"][c] - served[r["utterance_id"]][c]) for r in offline for c in r["probabilities"]
    )
    assert worst < TOLERANCE, f"largest probability difference {worst:.2e}"


@pytest.fixture(params=[0.0, 0.5], ids=["plain", "audio-pool"])
def windowed_checkpoint(request: pytest.FixtureRequest, tmp_path: Path, tiny_specs: dict[str, Any]) -> Path:
    """K = 4; the second also pools rows with audio with their words-hidden pass (`audio_weight`)."""
    path = write_tiny_checkpoint(tmp_path / "k4.pt", tiny_specs, seed=3, recency_bias=True)
    ckpt = load_checkpoint(path)
    ckpt.serving = ServingContract(window=4, audio_weight=request.param)
    return save_checkpoint(ckpt, path)


def test_replay_through_the_api_matches_lpgnet_evaluate_beyond_the_window(
    store_settings: dict[str, Any],
    tmp_path: Path,
    windowed_checkpoint: Path,
    tiny_encoder_dir: Path,
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
) -> None:
    from model.encoders.factory import checkpoint_encoders

    corpus = write_mixed_corpus(tmp_path)
    # the service's encoder rule (onnxruntime graphs on CPU, int8 where parity holds), as `lpgnet
    # evaluate` applies it, from the graph cache the service reads
    settings = make_settings(
        checkpoint=windowed_checkpoint, context_window=4, encoder_backend="auto", **store_settings
    )
    ckpt = load_checkpoint(windowed_checkpoint)
    encoders = checkpoint_encoders(
        ckpt.encoders,
        "tiny",
        device="cpu",
        precision="auto",
        backend="auto",
        cache_dir=settings.graph_cache,
        tiny_dir=tiny_encoder_dir,
    )
    assert any(type(e).__name__.startswith("Onnx") for e in encoders.values())
    _, features, contract, preds = predict_checkpoint(
        windowed_checkpoint, corpus, "test", encoders=encoders, cache_dir=tmp_path / "cache"
    )
    assert contract.window == 4 and max(len(d) for d in features.dialogues) == 9  # the window slides
    if contract.audio_weight:  # the pool moves answers, so a service that ignored it would not match
        unpooled = load_checkpoint(windowed_checkpoint)
        unpooled.serving = ServingContract(window=4)
        plain = predict_checkpoint(unpooled, corpus, "test", encoders=encoders, cache_dir=tmp_path / "c")[3]
        moved = [(p.probabilities - q.probabilities).abs().max() for p, q in zip(preds, plain, strict=True)]
        assert float(max(moved)) > 1e-3
    client = start_client(settings)
    assert_same(prediction_rows(features, preds), replay(client, corpus))


def test_replay_needs_the_same_window_to_match() -> None:
    """The comparison above can fail: the same checkpoint scored with another K answers differently."""
    torch.manual_seed(0)
    from model.lpgnet import LPGNet, LPGNetConfig
    from model.serving import module_network, predict_served

    net = LPGNet(LPGNetConfig(text_dim=6, audio_dim=5, hidden=8, num_classes=3, context="causal")).eval()

    class D:
        text = torch.randn(12, 6)
        audio = torch.randn(12, 5)
        text_mask = torch.ones(12, dtype=torch.bool)
        audio_mask = torch.rand(12) > 0.3

    run = module_network(net)
    k4, _ = predict_served(run, D, ServingContract(window=4), causal=True)
    k64, _ = predict_served(run, D, ServingContract(window=64), causal=True)
    assert torch.allclose(k4[:4], k64[:4], atol=1e-6)  # inside the window nothing differs
    assert (k4[4:] - k64[4:]).abs().max() > 1e-3  # past it the context differs, and so do the answers


@pytest.mark.skipif(not IEMOCAP.is_file(), reason=f"shared IEMOCAP table absent ({IEMOCAP})")
def test_default_checkpoint_text_only_replay_of_a_long_iemocap_dialogue(
    tmp_path: Path, clean_env: None, graph_cache: Path, start_client: Callable[..., TestClient]
) -> None:
    rows = [json.loads(line) for line in IEMOCAP.read_text().splitlines()]
    dialogue = [r for r in rows if r["dialogue_id"] == "Ses05F_impro05"]
    corpus = tmp_path / "one.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in dialogue))  # the IEMOCAP table format
    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    _, features, contract, preds = predict_checkpoint(
        ckpt,
        corpus,
        "test",
        modalities="text",
        cache_dir=tmp_path / "cache",
        graph_cache=graph_cache,  # the service's (LPGNET_CACHE_DIR)
        device="cpu",
    )
    offline = prediction_rows(features, preds)
    assert contract.window == 64 and len(offline) == 91  # 91 transcribed utterances: the window slides
    client = start_client(Settings(checkpoint=DEFAULT_CHECKPOINT))
    served = replay(client, corpus, modalities="text")
    assert_same(offline, served)


@pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"shared RAVDESS folder absent ({RAVDESS})")
@pytest.mark.parametrize("modalities", ["audio", "both"])
def test_default_checkpoint_replay_of_a_ravdess_actor_matches_lpgnet_evaluate(
    tmp_path: Path,
    clean_env: None,
    graph_cache: Path,
    start_client: Callable[..., TestClient],
    modalities: str,
) -> None:
    actor = tmp_path / "actor07"  # a test actor: never used for a choice
    actor.mkdir()
    for clip in sorted(RAVDESS.glob("03-01-*-07.flac")):
        (actor / clip.name).symlink_to(clip)
    corpus = write_jsonl(read_ravdess(actor), tmp_path / "ravdess.jsonl")  # absolute audio paths
    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    _, features, _, preds = predict_checkpoint(
        ckpt,
        corpus,
        "test",
        modalities=modalities,
        cache_dir=tmp_path / "cache",
        graph_cache=graph_cache,
        device="cpu",
    )
    offline = prediction_rows(features, preds)
    assert len(offline) == 28  # the actor's clips of the four classes, in the corpus's fixed order
    client = start_client(Settings(checkpoint=DEFAULT_CHECKPOINT))
    served = replay(client, corpus, modalities=modalities)
    assert_same(offline, served)
