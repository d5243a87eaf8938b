"""LPGNet's ONNX graph computes what the PyTorch module computes, at any batch and length."""

from __future__ import annotations

import pytest
import torch

from model.export import OnnxLPGNet, export_lpgnet, onnx_providers
from model.lpgnet import LPGNet, LPGNetConfig


@pytest.fixture(scope="module", params=["causal", "bidirectional"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    cfg = LPGNetConfig(
        text_dim=6,
        audio_dim=5,
        hidden=8,
        num_classes=3,
        heads=2,
        kernel_size=3,
        context=request.param,
        recency_bias=True,
    )
    model = LPGNet(cfg).eval()
    # non-trivial statistics, so the test also proves normalisation is inside the graph
    model.set_normalization({"text": {"mean": torch.randn(6), "std": torch.rand(6) + 0.5}})
    path = export_lpgnet(model, tmp_path_factory.mktemp("onnx") / "lpgnet.onnx")
    return model, OnnxLPGNet(path, device="cpu", intra_op_threads=1)


@pytest.mark.parametrize("b,u", [(1, 1), (1, 5), (4, 17)])
def test_onnx_matches_pytorch(exported, b, u):
    model, runner = exported
    g = torch.Generator().manual_seed(b * 100 + u)
    text, audio = torch.randn(b, u, 6, generator=g), torch.randn(b, u, 5, generator=g)
    tm = torch.rand(b, u, generator=g) > 0.3
    am = (torch.rand(b, u, generator=g) > 0.3) | ~tm
    with torch.no_grad():
        ref = model(text, audio, tm, am)
    got = runner(text, audio, tm, am)
    for r, o in zip(ref, got, strict=True):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)


def test_cpu_provider_is_always_the_fallback():
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
