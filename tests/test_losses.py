"""The self-distillation objective, checked against values computed by hand."""

from __future__ import annotations

import math

import torch

from model.losses import LossWeights, lpgnet_loss
from model.lpgnet import LPGNetOutput


def test_task_only_loss_is_masked_cross_entropy():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]]])  # (1, 3, 2)
    labels = torch.tensor([[0, 1, -1]])  # the third utterance is unlabelled context
    out = LPGNetOutput(logits, torch.zeros_like(logits), torch.zeros_like(logits))
    on = torch.ones(1, 3, dtype=torch.bool)
    loss, parts = lpgnet_loss(out, labels, on, on, LossWeights(task=1.0, ce=0.0, kl=0.0))
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose(parts["task"], expected, rel_tol=1e-6)


def test_kl_vanishes_when_students_agree_with_teacher_and_scales_with_tau():
    logits = torch.randn(2, 4, 3)
    labels = torch.randint(0, 3, (2, 4))
    on = torch.ones(2, 4, dtype=torch.bool)
    _, parts = lpgnet_loss(LPGNetOutput(logits, logits, logits), labels, on, on)
    assert abs(parts["kl_text"]) < 1e-6 and abs(parts["kl_audio"]) < 1e-6
    student = torch.zeros_like(logits)
    _, p1 = lpgnet_loss(LPGNetOutput(logits, student, student), labels, on, on, LossWeights(tau=1.0))
    assert p1["kl_text"] > 0


def test_students_train_only_where_their_modality_is_present():
    logits = torch.zeros(1, 2, 2)
    bad_audio = torch.tensor([[[0.0, 0.0], [50.0, -50.0]]])  # very wrong on utterance 1
    labels = torch.tensor([[0, 1]])
    tm = torch.ones(1, 2, dtype=torch.bool)
    am = torch.tensor([[True, False]])
    _, parts = lpgnet_loss(LPGNetOutput(logits, logits, bad_audio), labels, tm, am)
    assert math.isclose(parts["ce_audio"], math.log(2.0), rel_tol=1e-6)


def test_default_weights_are_the_papers_best_setting():
    w = LossWeights()
    assert (w.task, w.ce, w.kl, w.tau) == (1.5, 1.0, 0.3, 1.0)


def test_total_combines_the_parts_with_their_weights():
    torch.manual_seed(0)
    out = LPGNetOutput(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    labels = torch.randint(0, 4, (2, 3))
    on = torch.ones(2, 3, dtype=torch.bool)
    w = LossWeights(task=1.5, ce=1.0, kl=0.3, tau=2.0)
    loss, p = lpgnet_loss(out, labels, on, on, w)
    expected = 1.5 * p["task"] + p["ce_text"] + p["ce_audio"] + 0.3 * (p["kl_text"] + p["kl_audio"])
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
