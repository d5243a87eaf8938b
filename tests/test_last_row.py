"""The service answers each utterance from the last row of its window only (`LastRowNetwork`).

`LPGNet.forward(last_only=True)` (and its ONNX graph) computes that row alone: every stream still
attends over the whole window, but the compression, FFN, fusion and classifiers run for one row. The
answers must be those of the full pass, through every composition the service builds (the audio pool,
the text-only network routed in, the chat text network), on PyTorch and onnxruntime alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from model.export import (
    LAST_ROW_GRAPH,
    OnnxLPGNet,
    check_graph_parity,
    export_lpgnet,
    export_lpgnet_cached,
)
from model.lpgnet import LPGNet, LPGNetConfig
from model.serving import (
    ArrayWindow,
    LastRowNetwork,
    ServingContract,
    last_row_probabilities,
    module_network,
    served_network,
)

CFG = dict(text_dim=6, audio_dim=5, hidden=8, num_classes=3, dropout=0.0, heads=2, recency_bias=True)


def _model(seed: int, **overrides: Any) -> LPGNet:
    torch.manual_seed(seed)
    model = LPGNet(LPGNetConfig(**{**CFG, **overrides})).eval()
    model.set_normalization({"text": {"mean": torch.randn(6), "std": torch.rand(6) + 0.5}})
    return model


def _full_rows_only(network: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The same network without its last-row pass (a plain function: every row is computed)."""
    return lambda t, a, tm, am: network(t, a, tm, am)


def _windows(seed: int) -> list[ArrayWindow]:
    """Windows as the engine scores them: of several lengths, text-only, audio-only and mixed ones."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for u, text_p, audio_p in [(7, 0.8, 0.7), (3, 1.0, 0.0), (5, 0.0, 1.0), (1, 1.0, 1.0), (6, 1.0, 0.0)]:
        tm = torch.rand(u, generator=g) < text_p
        am = (torch.rand(u, generator=g) < audio_p) | ~tm
        if audio_p == 0.0:
            am = torch.zeros(u, dtype=torch.bool)
            tm = torch.ones(u, dtype=torch.bool)
        text, audio = torch.randn(u, 6, generator=g), torch.randn(u, 5, generator=g)
        out.append(ArrayWindow(text * tm[:, None], audio * am[:, None], tm, am))
    return out


@pytest.mark.parametrize("context", ["causal", "bidirectional"])
@pytest.mark.parametrize("audio_weight", [0.0, 0.5])
@pytest.mark.parametrize("texts", ["none", "text-only", "text-only+chat"])
def test_served_answers_equal_the_full_pass_through_every_composition(
    context: str, audio_weight: float, texts: str
) -> None:
    causal = context == "causal"
    fused = module_network(_model(0, context=context))
    text_only = module_network(_model(1, context=context, modalities="text")) if texts != "none" else None
    chat = module_network(_model(2, context=context, modalities="text")) if texts.endswith("chat") else None
    assert isinstance(fused, LastRowNetwork)
    contract = ServingContract(audio_weight=audio_weight)
    fast = served_network(fused, text_only, contract, causal=causal, chat_text=chat)
    slow = served_network(
        _full_rows_only(fused),
        None if text_only is None else _full_rows_only(text_only),
        contract,
        causal=causal,
        chat_text=None if chat is None else _full_rows_only(chat),
    )
    # a text-only window under chat routing needs every row of both text networks; others use last rows
    assert isinstance(fast, LastRowNetwork)
    windows = _windows(seed=5)
    batched = last_row_probabilities(fast, windows)
    torch.testing.assert_close(batched, last_row_probabilities(slow, windows), atol=1e-6, rtol=1e-6)
    for i, window in enumerate(windows):  # one window per call, the engine's usual case
        torch.testing.assert_close(
            last_row_probabilities(fast, [window]), batched[i : i + 1], atol=1e-6, rtol=1e-6
        )


def test_the_last_row_pass_is_what_answers() -> None:
    """A last-row pass that disagrees with the full one is the one the service's answer comes from."""
    full = module_network(_model(0))
    window = _windows(seed=1)[0]

    def shifted(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        logits = full.last(t, a, tm, am).clone()  # type: ignore[union-attr]
        logits[..., 0] += 5.0
        return logits

    assert isinstance(full, LastRowNetwork)
    plain = last_row_probabilities(full, [window])
    moved = last_row_probabilities(LastRowNetwork(full.rows, shifted), [window])
    assert moved[0, 0] > plain[0, 0] + 0.1


@pytest.mark.parametrize("context", ["causal", "bidirectional"])
def test_last_row_graph_matches_the_module_and_its_parity_check_catches_the_full_graph(
    context: str, tmp_path: Path
) -> None:
    model = _model(0, context=context, kernel_size=3, audio_norm="conversation")
    graph = export_lpgnet(model, tmp_path / LAST_ROW_GRAPH, last_only=True)
    assert check_graph_parity(model, graph, last_only=True) < 1e-3
    runner = OnnxLPGNet(graph, device="cpu", intra_op_threads=1)
    windows = _windows(seed=2)
    onnx = LastRowNetwork(module_network(model), lambda t, a, tm, am: runner(t, a, tm, am).logits)
    torch.testing.assert_close(
        last_row_probabilities(onnx, windows), last_row_probabilities(module_network(model), windows)
    )
    full = export_lpgnet(model, tmp_path / "full.onnx")
    with pytest.raises(ValueError):  # every row where one is expected: refused, never served
        check_graph_parity(model, full, last_only=True)


def test_cached_last_row_graph_is_named_apart_from_the_full_one(tmp_path: Path) -> None:
    model = _model(0)
    full, last = export_lpgnet_cached(model, tmp_path), export_lpgnet_cached(model, tmp_path, last_only=True)
    assert last.name.endswith("-last-row.onnx") and not full.name.endswith("-last-row.onnx")
    assert last.name == f"{full.stem}-last-row.onnx"  # a checkpoint's two graphs side by side
    assert sorted(tmp_path.glob("*.onnx")) == sorted([full, last])
    assert export_lpgnet_cached(model, tmp_path, last_only=True) == last  # once per checkpoint


@pytest.mark.slow
def test_engine_serves_the_last_row_pass_on_both_runtimes(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    from app.engine import Engine
    from app.metrics import Metrics
    from app.store import MemoryStore

    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    threads = torch.get_num_threads()  # loading moves the process default; put it back
    try:
        for backend in ("auto", "torch"):
            settings = make_settings(cache_dir=tmp_path / "cache", encoder_backend="torch", backend=backend)
            engine = Engine.load(settings, store, Metrics())
            assert isinstance(engine.workers.network, LastRowNetwork), backend
            assert engine.backend == {"auto": "onnx", "torch": "torch"}[backend]
        assert engine.backend == "torch" and len(list((tmp_path / "cache").glob("*-last-row.onnx"))) == 1
    finally:
        torch.set_num_threads(threads)
