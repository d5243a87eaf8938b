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
    torch_client = start_client(make_settings())
    onnx_client = start_client(make_settings(backend="onnx", onnx_model=graph))
    assert onnx_client.get("/model").json()["backend"] == "onnx"
    for i, text in enumerate(["hello", "this is taking forever", "thank you so much"]):
        a = torch_client.post("/conversations/c/utterances", json={"transcript": text}).json()
        b = onnx_client.post("/conversations/c/utterances", json={"transcript": text}).json()
        assert a["index"] == b["index"] == i
        assert b["probabilities"] == pytest.approx(a["probabilities"], abs=1e-4)
