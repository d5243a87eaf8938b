"""Shape, mask, causality and learning tests of LPGNet on many tiny models."""

from __future__ import annotations

import pytest
import torch

from model.losses import LossWeights, lpgnet_loss
from model.lpgnet import LPGNet, LPGNetConfig, count_parameters, paper_config

TINY = dict(text_dim=6, audio_dim=5, hidden=8, num_classes=3, dropout=0.0)


def make_batch(b: int, u: int, cfg: LPGNetConfig, seed: int = 0, p_missing: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(b, u, cfg.text_dim, generator=g)
    audio = torch.randn(b, u, cfg.audio_dim, generator=g)
    tm = torch.rand(b, u, generator=g) > p_missing
    am = torch.rand(b, u, generator=g) > p_missing
    am = am | ~tm  # every real utterance has at least one modality
    return text, audio, tm, am


def tiny_model(seed: int = 0, **overrides) -> LPGNet:
    torch.manual_seed(seed)
    return LPGNet(LPGNetConfig(**{**TINY, **overrides})).eval()


VARIANTS = [
    dict(context="causal"),
    dict(context="bidirectional"),
    dict(context="causal", kernel_size=3, heads=2, recency_bias=True),
    dict(context="bidirectional", kernel_size=2, heads=4),
    dict(context="causal", inter_attention=False),
    dict(context="causal", intra_attention=False),
    dict(context="causal", ffn=False),
    dict(context="causal", gated_fusion=False),
    dict(context="causal", modalities="text"),
    dict(context="bidirectional", modalities="audio"),
    dict(context="causal", audio_norm="conversation", recency_bias=True),
    dict(context="bidirectional", audio_norm="conversation", audio_prior=1.0),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
@pytest.mark.parametrize("b,u", [(1, 1), (3, 7), (2, 13)])
def test_forward_shapes_are_b_u_c_and_finite(variant, b, u):
    model = tiny_model(**variant)
    out = model(*make_batch(b, u, model.cfg))
    for t in out:
        assert t.shape == (b, u, 3)
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("variant", VARIANTS[:4], ids=str)
def test_padding_changes_nothing(variant):
    model = tiny_model(**variant)
    text, audio, tm, am = make_batch(1, 5, model.cfg)
    ref = model(text, audio, tm, am)
    pad = 4
    garbage = lambda x: torch.cat([x, 100 * torch.randn(1, pad, x.shape[-1])], 1)  # noqa: E731
    off = torch.zeros(1, pad, dtype=torch.bool)
    out = model(garbage(text), garbage(audio), torch.cat([tm, off], 1), torch.cat([am, off], 1))
    for r, o in zip(ref, out, strict=True):
        torch.testing.assert_close(o[:, :5], r, atol=1e-5, rtol=1e-5)


def test_batch_rows_are_independent_of_each_other():
    model = tiny_model(context="bidirectional", kernel_size=3)
    text, audio, tm, am = make_batch(3, 6, model.cfg)
    batched = model(text, audio, tm, am).logits
    single = model(text[1:2], audio[1:2], tm[1:2], am[1:2]).logits
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("audio_norm", ["global", "conversation"])
def test_causal_mode_appending_utterances_changes_no_earlier_output(kernel_size, audio_norm):
    model = tiny_model(context="causal", kernel_size=kernel_size, recency_bias=True, audio_norm=audio_norm)
    text, audio, tm, am = make_batch(2, 9, model.cfg)
    full = model(text, audio, tm, am)
    for k in (1, 4, 8):
        prefix = model(text[:, :k], audio[:, :k], tm[:, :k], am[:, :k])
        for f, p in zip(full, prefix, strict=True):
            torch.testing.assert_close(f[:, :k], p, atol=1e-5, rtol=1e-5)


def test_bidirectional_mode_does_look_ahead():
    model = tiny_model(context="bidirectional")
    text, audio, tm, am = make_batch(1, 6, model.cfg, p_missing=0.0)
    full = model(text, audio, tm, am).logits
    prefix = model(text[:, :3], audio[:, :3], tm[:, :3], am[:, :3]).logits
    assert not torch.allclose(full[:, :3], prefix, atol=1e-4)


@pytest.mark.parametrize("audio_norm", ["global", "conversation"])
def test_missing_modality_input_values_are_ignored(audio_norm):
    """Whatever sits in a missing modality's slot must not change any output."""
    model = tiny_model(context="causal", audio_norm=audio_norm)
    text, audio, tm, am = make_batch(2, 6, model.cfg)
    ref = model(text, audio, tm, am).logits
    noisy_audio = torch.where(am.unsqueeze(-1), audio, 1e3 * torch.randn_like(audio))
    noisy_text = torch.where(tm.unsqueeze(-1), text, -1e3 * torch.randn_like(text))
    torch.testing.assert_close(model(noisy_text, noisy_audio, tm, am).logits, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("missing", ["text", "audio"])
def test_rows_with_one_modality_give_valid_probabilities(missing):
    model = tiny_model(context="causal")
    text, audio, _, _ = make_batch(2, 5, model.cfg)
    on = torch.ones(2, 5, dtype=torch.bool)
    tm, am = (~on, on) if missing == "text" else (on, ~on)
    probs = torch.softmax(model(text, audio, tm, am).logits, -1)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))


def test_gradients_reach_every_parameter():
    model = tiny_model(context="causal", kernel_size=3, recency_bias=True).train()
    text, audio, tm, am = make_batch(3, 6, model.cfg, p_missing=0.2)
    labels = torch.randint(0, 3, (3, 6))
    loss, _ = lpgnet_loss(model(text, audio, tm, am), labels, tm, am)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent, f"no gradient reached {silent}"


def test_one_batch_overfits():
    torch.manual_seed(0)
    model = LPGNet(LPGNetConfig(**{**TINY, "hidden": 16}, context="causal"))
    text, audio, tm, am = make_batch(4, 8, model.cfg, p_missing=0.2)
    labels = torch.randint(0, 3, (4, 8))
    labels[0, -2:] = -1  # unlabelled context utterances
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss, _ = lpgnet_loss(model(text, audio, tm, am), labels, tm, am, LossWeights())
        loss.backward()
        opt.step()
    model.eval()
    pred = model(text, audio, tm, am).logits.argmax(-1)
    labelled = labels >= 0
    assert (pred[labelled] == labels[labelled]).float().mean() == 1.0


def test_batchnorm_statistics_ignore_padding():
    model = tiny_model(context="bidirectional").train()
    text, audio, tm, am = make_batch(1, 4, model.cfg, p_missing=0.0)
    bn = model.attn["tt"].enhance.norm
    model(text, audio, tm, am)
    stats = bn.running_mean.clone()
    bn.running_mean.zero_()
    bn.running_var.fill_(1)
    pad = torch.zeros(1, 5, dtype=torch.bool)
    model(
        torch.cat([text, 50 + torch.randn(1, 5, 6)], 1),
        torch.cat([audio, torch.randn(1, 5, 5)], 1),
        torch.cat([tm, pad], 1),
        torch.cat([am, pad], 1),
    )
    torch.testing.assert_close(bn.running_mean, stats, atol=1e-5, rtol=1e-5)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="context"):
        LPGNetConfig(context="future")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        LPGNetConfig(hidden=10, heads=3)
    with pytest.raises(ValueError, match="intra"):
        LPGNetConfig(intra_attention=False, inter_attention=False)


def test_ablations_remove_parameters():
    full = count_parameters(tiny_model())
    assert count_parameters(tiny_model(ffn=False)) < full
    assert count_parameters(tiny_model(inter_attention=False)) < full
    assert count_parameters(tiny_model(modalities="text")) < full


def test_paper_size_parameter_count_is_stable():
    # d = 768 everywhere: the figure the model card states; recomputed here so the card cannot drift
    n = count_parameters(LPGNet(paper_config()))
    assert 10_000_000 < n < 50_000_000


def test_conversation_norm_cancels_a_speakers_level_and_gain():
    """Without a prior, a conversation's audio shifted and scaled per dimension (another speaker or
    microphone) is standardised to the same values from its second utterance on."""
    from model.inputs import ConversationNorm

    norm = ConversationNorm(prior=0.0, causal=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 12, 5, generator=g)
    m = torch.ones(1, 12)
    m[0, 3] = 0.0  # a clip without audio: not counted, output zero
    x = x * m.unsqueeze(-1)
    shifted = (x * 3.0 + torch.tensor([5.0, -2.0, 0.5, 10.0, -7.0])) * m.unsqueeze(-1)
    a, b = norm(x, m), norm(shifted, m)
    torch.testing.assert_close(a[:, 1:], b[:, 1:], atol=1e-4, rtol=1e-4)
    assert (a[0, 3] == 0).all()


def test_conversation_norm_prior_keeps_the_first_utterances_near_the_global_scale():
    from model.inputs import ConversationNorm

    x = torch.full((1, 3, 2), 2.0)
    m = torch.ones(1, 3)
    out = ConversationNorm(prior=4.0, causal=True)(x, m)
    # first utterance: mean 2/5, E[x^2] = (4 + 4)/5 -> (2 - 0.4) / sqrt(1.6 - 0.16)
    torch.testing.assert_close(out[0, 0], torch.full((2,), 1.6 / 1.44**0.5))
    assert (out[0, 1:] < out[0, 0]).all()  # the same value again stands out less and less


def test_conversation_norm_changes_what_the_network_answers():
    """The switch is live: the same weights with a conversation norm give other logits."""
    cfg = dict(context="causal")
    a = tiny_model(seed=1, **cfg)
    b = tiny_model(seed=1, audio_norm="conversation", **cfg)
    text, audio, tm, am = make_batch(2, 6, a.cfg, p_missing=0.0)
    assert not torch.allclose(a(text, audio, tm, am).logits, b(text, audio, tm, am).logits, atol=1e-3)


def _windows_ending_early(b: int, u: int, cfg: LPGNetConfig, seed: int):
    """Right-padded windows of lengths u, u - 2, ..., the last real row of some with one modality."""
    text, audio, tm, am = make_batch(b, u, cfg, seed=seed)
    for i in range(1, b):
        tm[i, u - 2 * i :] = am[i, u - 2 * i :] = False
    tm[0, -1], am[0, -1] = False, True  # window 0 ends on a row with audio alone
    return text, audio, tm, am


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_last_only_equals_the_last_real_row_of_the_full_pass(variant):
    """What the service asks for (each window's last row) computed alone is those rows of every row's."""
    model = tiny_model(seed=3, **variant)
    model.text_norm.mean.normal_()  # statistics that are not the identity, and trained BatchNorm
    for m in model.modules():
        if hasattr(m, "running_mean") and m.running_mean.dim() == 1 and m.running_mean.numel() == 8:
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    text, audio, tm, am = _windows_ending_early(3, 9, model.cfg, seed=4)
    with torch.no_grad():
        full, last = model(text, audio, tm, am), model(text, audio, tm, am, last_only=True)
    ends = torch.tensor([8, 6, 4])
    for rows, got in zip(full, last, strict=True):
        assert got.shape == (3, 1, 3)
        torch.testing.assert_close(got[:, 0], rows[torch.arange(3), ends], atol=1e-5, rtol=1e-5)
    if model.cfg.modalities == "text":  # window 0 ends on a row it cannot hear: no answer of its own
        return
    # and the rows it skips are not what it answers: a window with one more row answers differently
    with torch.no_grad():
        shorter = model(text[:, :-1], audio[:, :-1], tm[:, :-1], am[:, :-1], last_only=True)
    assert not torch.allclose(shorter.logits[0], last.logits[0])


def test_last_only_is_for_inference():
    model = tiny_model().train()
    text, audio, tm, am = make_batch(2, 4, model.cfg)
    with pytest.raises(ValueError, match="inference"):
        model(text, audio, tm, am, last_only=True)
