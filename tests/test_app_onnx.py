"""LPGNET_BACKEND=onnx: the network's ONNX graph in onnxruntime answers like PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model.checkpoint import load_checkpoint

pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_onnx_backend_matches_the_torch_backend(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    from model.export import export_lpgnet

    graph = export_lpgnet(load_checkpoint(tiny_checkpoint).model, tmp_path / "tiny.onnx")
    torch_client = start_client(make_settings(backend="torch"))
    onnx_client = start_client(make_settings(backend="onnx", onnx_model=graph))
    assert onnx_client.get("/model").json()["backend"] == "onnx"
    for i, text in enumerate(["hello", "this is taking forever", "thank you so much"]):
        a = torch_client.post("/conversations/c/utterances", json={"transcript": text}).json()
        b = onnx_client.post("/conversations/c/utterances", json={"transcript": text}).json()
        assert a["index"] == b["index"] == i
        assert b["probabilities"] == pytest.approx(a["probabilities"], abs=1e-4)


@pytest.mark.slow
def test_exported_bundle_serves_the_default_weights_like_pytorch(
    clean_env: None,
    start_client: Callable[..., TestClient],
    ravdess_clips: list[Any],
    tmp_path: Path,
) -> None:
    """`lpgnet export` -> LPGNET_BACKEND=onnx + LPGNET_ONNX_MODEL=DIR: MiniLM and LPGNet in onnxruntime."""
    from app.settings import Settings
    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.export import export_bundle

    bundle = export_bundle(DEFAULT_CHECKPOINT, tmp_path / "bundle")
    torch_client = start_client(Settings(backend="torch", encoder_precision="fp32"))
    onnx_client = start_client(Settings(backend="onnx", onnx_model=bundle, onnx_threads=1))
    assert onnx_client.get("/model").json()["backend"] == "onnx"
    for clip in ravdess_clips[:3]:
        files = {"audio": (clip.path.name, clip.data, "audio/wav")}
        a = torch_client.post(
            "/conversations/c/utterances", files=files, data={"transcript": clip.transcript}
        )
        b = onnx_client.post("/conversations/c/utterances", files=files, data={"transcript": clip.transcript})
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert b.json()["index"] == a.json()["index"]
        assert b.json()["probabilities"] == pytest.approx(a.json()["probabilities"], abs=1e-3)
