"""The committed default checkpoint: `lpgnet evaluate` reproduces the figures recorded in it.

Training scored the fused network on IEMOCAP session 5 and RAVDESS actors 07-12 as served (window K,
float16 storage, fp32 encoders); the default also carries a text-only network, so its `training.test`
was recorded again through the service's routing (`scripts/record_test_metrics.py`) and the training
run's own figures are kept as `training.test_fused`. Evaluating the file again must give both: the pair
as recorded, and the fused network alone as its training run scored it (an independent record). A
drift means the serving path, the readers or the encoders changed under the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.evaluate import evaluate_checkpoint
from model.paths import SHARED_ROOT

IEMOCAP = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
RAVDESS_12 = SHARED_ROOT / "data" / "speech" / "ravdess-01-12"


@pytest.fixture(scope="module")
def recorded() -> dict:
    ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    test = ckpt.training.get("test") or {}
    if "iemocap/both" not in test:
        pytest.fail("the default checkpoint must record its per-corpus test metrics (training.test)")
    return test


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the module: session 5 is encoded once, not once per modality setting."""
    return tmp_path_factory.mktemp("features")


@pytest.mark.slow
@pytest.mark.skipif(not IEMOCAP.is_file(), reason=f"shared IEMOCAP table absent ({IEMOCAP})")
@pytest.mark.parametrize("modalities", ["both", "text", "audio"])
def test_iemocap_session5_as_recorded(recorded: dict, modalities: str, cache: Path) -> None:
    m = evaluate_checkpoint(
        None,
        IEMOCAP,
        "test",
        modalities=modalities,
        precision="fp32",
        backend="torch",
        cache_dir=cache,
        device="cpu",
    )
    want = recorded[f"iemocap/{modalities}"]
    assert m["labelled_read"]["total"] == 1241
    assert m["n"] == want["n"]
    assert m["accuracy"] == pytest.approx(want["accuracy"], abs=2e-3)
    assert m["unweighted_accuracy"] == pytest.approx(want["unweighted_accuracy"], abs=2e-3)
    fused_record = load_checkpoint(DEFAULT_CHECKPOINT).training.get("test_fused")
    if modalities == "text" and fused_record:  # the fused network alone, as its training run scored it
        fused = load_checkpoint(DEFAULT_CHECKPOINT)
        fused.text_only = None
        f = evaluate_checkpoint(
            fused,
            IEMOCAP,
            "test",
            modalities="text",
            precision="fp32",
            backend="torch",
            cache_dir=cache,
            device="cpu",
        )
        assert f["accuracy"] == pytest.approx(fused_record["iemocap/text"]["accuracy"], abs=2e-3)
        assert f["accuracy"] < m["accuracy"]  # the text-only network is what lifts a text-only client


@pytest.mark.skipif(not RAVDESS_12.is_dir(), reason=f"RAVDESS actors 01-12 absent ({RAVDESS_12})")
def test_ravdess_test_actors_audio_only_as_recorded(recorded: dict, cache: Path) -> None:
    m = evaluate_checkpoint(
        None,
        RAVDESS_12,
        "test",
        modalities="audio",
        precision="fp32",
        backend="torch",
        cache_dir=cache,
        device="cpu",
    )
    want = recorded["ravdess/audio"]
    assert m["n"] == want["n"] == 168
    assert m["unweighted_accuracy"] == pytest.approx(want["unweighted_accuracy"], abs=2e-3)


SIX_CLASS = DEFAULT_CHECKPOINT.with_name("lpgnet-offline-causal-6class.pt")


def test_the_six_class_checkpoint_is_served_by_setting_lpgnet_checkpoint(clean_env, start_client) -> None:
    from app.settings import Settings

    client = start_client(Settings(checkpoint=SIX_CLASS))
    labels = load_checkpoint(SIX_CLASS).labels
    assert labels == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]  # the paper's Table 7 set
    assert client.get("/model").json()["labels"] == labels
    r = client.post(
        "/conversations/c6/utterances", json={"transcript": "This is the third time I call about it."}
    )
    assert r.status_code == 200, r.text
    assert list(r.json()["probabilities"]) == labels
    assert client.get("/model").json()["text_only_network"]  # text-only clients get its text network


@pytest.mark.slow
@pytest.mark.skipif(not IEMOCAP.is_file(), reason=f"shared IEMOCAP table absent ({IEMOCAP})")
def test_six_class_text_only_as_recorded_and_above_its_fused_network(tmp_path: Path) -> None:
    six = load_checkpoint(SIX_CLASS)
    recorded, fused_record = six.training["test"]["iemocap/text"], six.training["test_fused"]["iemocap/text"]
    m = evaluate_checkpoint(
        six,
        IEMOCAP,
        "test",
        modalities="text",
        precision="fp32",
        backend="torch",
        cache_dir=tmp_path,
        device="cpu",
    )
    assert m["labelled_read"]["total"] == m["n"] == recorded["n"] == 1622
    assert m["accuracy"] == pytest.approx(recorded["accuracy"], abs=2e-3)
    assert m["accuracy"] > fused_record["accuracy"]  # the fused network alone, as its training run scored it
