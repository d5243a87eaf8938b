"""Training objective of LPGNet: task loss plus self-distillation into the unimodal students.

loss = w_task * CE(teacher) + w_ce * (CE(text) + CE(audio)) + w_kl * tau^2 * (KL(text) + KL(audio))

The KL pulls each student's tempered distribution towards the fused teacher's (detached, so the
teacher is not dragged towards its weaker students). A student is only trained on utterances where
its modality is present. Defaults are the paper's best setting: 1.5 / 1.0 / 0.3, tau = 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.lpgnet import LPGNetOutput


@dataclass(frozen=True)
class LossWeights:
    task: float = 1.5  # fused teacher cross-entropy
    ce: float = 1.0  # student cross-entropy
    kl: float = 0.3  # teacher -> student distillation
    tau: float = 1.0  # distillation temperature
    label_smoothing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _masked_ce(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, smoothing: float
) -> torch.Tensor:
    # logits (N, C), labels (N,), mask (N,) float
    ce = F.cross_entropy(logits, labels.clamp(min=0), reduction="none", label_smoothing=smoothing)
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


def _masked_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    log_p = F.log_softmax(student / tau, -1)
    q = F.softmax(teacher.detach() / tau, -1)
    kl = (q * (torch.log(q.clamp(min=1e-12)) - log_p)).sum(-1)  # (N,)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0) * tau * tau


def lpgnet_loss(
    out: LPGNetOutput,
    labels: torch.Tensor,
    text_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    weights: LossWeights = LossWeights(),
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """labels (B, U) long with -1 for unlabelled/padded utterances; masks (B, U) bool;
    sample_weight (B, U) float: per-utterance weight of the task loss (e.g. class balance per corpus),
    normalised by its sum over the labelled utterances.

    Returns the scalar loss and its parts (floats) for logging.
    """
    c = out.logits.shape[-1]
    y = labels.reshape(-1)
    labelled = (y >= 0).to(out.logits.dtype)
    teacher = out.logits.reshape(-1, c)
    if sample_weight is not None:
        w = sample_weight.reshape(-1).to(labelled.dtype) * labelled
        ce = F.cross_entropy(
            teacher, y.clamp(min=0), reduction="none", label_smoothing=weights.label_smoothing
        )
        task = (ce * w).sum() / w.sum().clamp(min=1e-6)
    else:
        task = _masked_ce(teacher, y, labelled, weights.label_smoothing)
    parts = {"task": task.item()}
    total = weights.task * task
    for name, student, present in (
        ("text", out.text_logits, text_mask),
        ("audio", out.audio_logits, audio_mask),
    ):
        m = labelled * present.reshape(-1).to(labelled.dtype)
        if weights.ce or weights.kl:
            s = student.reshape(-1, c)
            ce_s = _masked_ce(s, y, m, weights.label_smoothing)
            kl_s = _masked_kl(s, teacher, m, weights.tau)
            total = total + weights.ce * ce_s + weights.kl * kl_s
            parts[f"ce_{name}"], parts[f"kl_{name}"] = ce_s.item(), kl_s.item()
    parts["total"] = total.item()
    return total, parts
