"""Baselines: shapes, context behaviour, padding, modality use, and the file round trip."""

from __future__ import annotations

import pytest
import torch

from model.baselines import BaselineCheckpoint, BaselineConfig, build_baseline, load_baseline, save_baseline
from model.encoders.base import EncoderSpec
from model.evaluate import load_any_checkpoint


def inputs(b=2, u=7, dt=6, da=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, u, dt, generator=g),
        torch.randn(b, u, da, generator=g),
        torch.ones(b, u, dtype=torch.bool),
        torch.ones(b, u, dtype=torch.bool),
    )


def model(kind, context="causal", modalities="both"):
    torch.manual_seed(0)
    m = build_baseline(
        BaselineConfig(
            kind=kind,
            text_dim=6,
            audio_dim=3,
            hidden=8,
            num_classes=4,
            context=context,
            modalities=modalities,
        )
    )
    return m.eval()


@pytest.mark.parametrize("kind", ["linear", "gru"])
@pytest.mark.parametrize("context", ["causal", "bidirectional"])
def test_output_shapes_and_zero_students(kind, context):
    out = model(kind, context)(*inputs())
    assert out.logits.shape == (2, 7, 4)
    assert not out.text_logits.any() and not out.audio_logits.any()


@pytest.mark.parametrize("kind", ["linear", "gru"])
def test_causal_outputs_ignore_the_future(kind):
    m = model(kind, "causal")
    t, a, tm, am = inputs()
    t2, a2 = t.clone(), a.clone()
    t2[:, 4:] += 5.0
    a2[:, 4:] -= 5.0
    assert torch.allclose(m(t, a, tm, am).logits[:, :4], m(t2, a2, tm, am).logits[:, :4], atol=1e-6)


def test_bigru_sees_the_future_and_linear_sees_nothing_else():
    t, a, tm, am = inputs()
    t2 = t.clone()
    t2[:, 6] += 5.0
    bi = model("gru", "bidirectional")
    assert not torch.allclose(bi(t, a, tm, am).logits[:, 0], bi(t2, a, tm, am).logits[:, 0])
    lin = model("linear")
    assert torch.allclose(lin(t, a, tm, am).logits[:, :6], lin(t2, a, tm, am).logits[:, :6])


@pytest.mark.parametrize("context", ["causal", "bidirectional"])
def test_trailing_padding_changes_nothing(context):
    m = model("gru", context)
    t, a, tm, am = inputs(b=1, u=5)
    ref = m(t, a, tm, am).logits
    pad = lambda x, v=0: torch.nn.functional.pad(x, (0, 0, 0, 3) if x.dim() == 3 else (0, 3), value=v)  # noqa: E731
    out = m(pad(t, 1.0), pad(a, 1.0), pad(tm, False), pad(am, False)).logits
    assert torch.allclose(out[:, :5], ref, atol=1e-6)


def test_unimodal_baseline_ignores_the_other_modality():
    m = model("gru", modalities="text")
    t, a, tm, am = inputs()
    assert torch.allclose(m(t, a, tm, am).logits, m(t, a * 0 + 9, tm, am).logits)


def test_baseline_file_round_trip_keeps_weights_labels_specs_and_normalisation(tmp_path):
    m = model("gru", "bidirectional")
    m.set_normalization({"text": {"mean": torch.full((6,), 0.5), "std": torch.full((6,), 2.0)}})
    spec = EncoderSpec("t", "1", 6, "text")
    path = save_baseline(
        BaselineCheckpoint(m, ["a", "b", "c", "d"], {"text": spec}, "offline"), tmp_path / "b.pt"
    )
    back = load_baseline(path)
    assert (
        back.labels == ["a", "b", "c", "d"]
        and back.encoders == {"text": spec}
        and back.context == "bidirectional"
    )
    assert isinstance(load_any_checkpoint(path), BaselineCheckpoint)
    x = inputs()
    assert torch.allclose(back.model(*x).logits, m(*x).logits)
    assert back.model.normalization()["text"]["std"] == [2.0] * 6
