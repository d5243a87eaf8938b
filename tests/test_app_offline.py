"""The service with no configuration: the committed default weights on the offline profile."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from tests.app_fixtures import Clip


@pytest.fixture
def default_client(clean_env: None, start_client: Callable[..., TestClient]) -> TestClient:
    return start_client(Settings())  # exactly what `lpgnet serve` builds without any LPGNET_* variable


def test_default_weights_use_the_offline_tuned_profile(default_client: TestClient) -> None:
    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    body = default_client.get("/model").json()
    assert body["profile"] == ckpt.profile == "offline-tuned"
    assert body["encoders"]["text"]["name"] == "hf:minilm-erc-v1:mean"
    assert body["context"] == "causal"
    assert body["labels"] == ckpt.labels and body["version"] == ckpt.version
    assert body["encoders"]["audio"]["sample_rate"] == 44_100


def test_ravdess_conversation_on_the_default_weights(
    default_client: TestClient, ravdess_clips: list[Clip]
) -> None:
    labels = load_checkpoint(DEFAULT_CHECKPOINT).labels
    for i, clip in enumerate(ravdess_clips):
        r = default_client.post(
            "/conversations/ravdess/utterances",
            data={"transcript": clip.transcript, "utterance_id": f"clip-{i}"},
            files={"audio": (clip.path.name, clip.data, "audio/wav")},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["index"] == i and body["context_size"] == i + 1
        assert list(body["probabilities"]) == labels
        assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-6)
        assert body["modalities"] == ["text", "audio"]
    conversation = default_client.get("/conversations/ravdess").json()
    assert [u["utterance_id"] for u in conversation["utterances"]] == [f"clip-{i}" for i in range(8)]
    text_only = default_client.post("/conversations/ravdess/utterances", json={"transcript": "I am furious."})
    assert text_only.status_code == 200 and text_only.json()["modalities"] == ["text"]
