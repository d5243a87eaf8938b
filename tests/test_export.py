"""LPGNet's ONNX graph computes what the PyTorch module computes, at any batch and length."""

from __future__ import annotations

import pytest
import torch

from model.export import OnnxLPGNet, export_lpgnet
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


@pytest.mark.slow
def test_bundle_exports_every_graph_and_serves_the_same_vectors(tmp_path, tiny_encoder_dir):
    """`export_bundle` on a tiny-profile checkpoint: manifest, three graphs, same encoder outputs."""
    import json

    import numpy as np

    from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from model.encoders.factory import load_bundle_encoders
    from model.encoders.profiles import build_encoders, encoder_specs
    from model.export import MANIFEST, check_graph_parity, export_bundle

    encoders = build_encoders("tiny", device="cpu", tiny_dir=tiny_encoder_dir)
    specs = encoder_specs(encoders)
    torch.manual_seed(0)
    model = LPGNet(
        LPGNetConfig(
            text_dim=specs["text"].dim,
            audio_dim=specs["audio"].dim,
            hidden=8,
            num_classes=2,
            context="causal",
        )
    )
    ckpt = save_checkpoint(Checkpoint(model, ["calm", "upset"], specs, "tiny"), tmp_path / "m.pt")
    out = export_bundle(ckpt, tmp_path / "bundle", tiny_dir=tiny_encoder_dir)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["checkpoint"]["labels"] == ["calm", "upset"]
    assert {m: e["backend"] for m, e in manifest["encoders"].items()} == {"text": "onnx", "audio": "onnx"}
    assert (out / "lpgnet.onnx").exists() and manifest["lpgnet_last_row"] == "lpgnet-last-row.onnx"
    last_row = out / manifest["lpgnet_last_row"]
    assert check_graph_parity(load_checkpoint(ckpt).model, last_row, last_only=True) < 1e-3
    served = load_bundle_encoders(out, device="cpu", intra_op_threads=1)
    assert {m: e.spec for m, e in served.items()} == specs
    texts = ["hello there", "I am not sure this is a good idea at all"]
    torch.testing.assert_close(
        served["text"].encode_batch(texts), encoders["text"].encode_batch(texts), atol=1e-4, rtol=1e-4
    )
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000)]
    torch.testing.assert_close(
        served["audio"].encode_batch(waves), encoders["audio"].encode_batch(waves), atol=1e-4, rtol=1e-4
    )


@pytest.fixture(scope="module")
def causal_graph(tmp_path_factory):
    """A small causal model and its exported graph (one export for the tests below)."""
    torch.manual_seed(0)
    model = LPGNet(LPGNetConfig(text_dim=6, audio_dim=5, hidden=8, num_classes=3, context="causal")).eval()
    return model, export_lpgnet(model, tmp_path_factory.mktemp("graph") / "lpgnet.onnx")


def test_parity_check_refuses_another_models_graph_and_accepts_its_own(causal_graph):
    from model.export import check_graph_parity

    model, graph = causal_graph
    assert check_graph_parity(model, graph) < 1e-3
    torch.manual_seed(1)
    stranger = LPGNet(model.cfg).eval()
    with pytest.raises(ValueError, match="differ from PyTorch"):
        check_graph_parity(stranger, graph)


@pytest.mark.slow
def test_cached_export_is_keyed_by_the_exporter_version_too(causal_graph, tmp_path, monkeypatch):
    import model.export as export

    model, _ = causal_graph
    first = export.export_lpgnet_cached(model, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert export.export_lpgnet_cached(model, tmp_path) == first and first.stat().st_mtime_ns == stamp
    monkeypatch.setattr(export, "EXPORT_VERSION", export.EXPORT_VERSION + 1)
    second = export.export_lpgnet_cached(model, tmp_path)
    assert second != first and sorted(tmp_path.iterdir()) == sorted([first, second])
