"""LPGNet: lightweight parallel attention + gated fusion for emotion recognition in conversation.

After "LPGNet: A Lightweight Network with Parallel Attention and Gated Fusion for Multimodal
Emotion Recognition" (2025), section 3. No speaker input of any kind.

Dimension legend:
    B  dialogues in a batch        U  utterances per dialogue (padded)
    Dt, Da  text / audio feature dims      D  hidden size      C  classes      H  heads

Context modes: "bidirectional" (the paper: every utterance sees the whole dialogue) and "causal"
(a live service: utterance i sees utterances <= i, in the attentions and the global compression).
`forward` is tensors in, tensors out, with no data-dependent Python branching (ONNX, compile).
Padding and missing modalities are two masks: a missing modality neither attends nor is attended to.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.inputs import ConversationNorm, InputNorm, Prosody8Log
from model.lpgnet_config import LPGNetConfig, paper_config

MASK_FILL = -1e4  # finite, so rows with no visible key stay NaN-free (they are zeroed afterwards)


class LPGNetOutput(NamedTuple):
    logits: torch.Tensor  # (B, U, C) fused teacher
    text_logits: torch.Tensor  # (B, U, C) text student
    audio_logits: torch.Tensor  # (B, U, C) audio student


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the valid rows only, so padding never leaks into the statistics."""

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.momentum, self.eps = momentum, eps

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # x (B, U, D), valid (B, U) float
        if self.training:  # a mode switch, not a data-dependent branch
            w = valid.unsqueeze(-1)
            n = w.sum().clamp(min=1.0)
            mean = (x * w).sum((0, 1)) / n
            var = (((x - mean) ** 2) * w).sum((0, 1)) / n
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class ResidualEnhancement(nn.Module):
    """Two-stage residual enhancement (sec. 3.3): global compression, then a position-wise FFN.

    Global compression: the mean of the attention output over the visible utterances (the prefix in
    causal mode), a 1x1 conv (a linear map per position), BatchNorm and LeakyReLU, broadcast back and
    added: A_conv = A + g. Then X = Q + A_conv + FFN(A_conv).
    """

    def __init__(self, cfg: LPGNetConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.causal = cfg.context == "causal"
        self.compress = nn.Linear(d, d)  # == Conv1d(d, d, 1) over utterances
        self.norm = MaskedBatchNorm(d)
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.ffn: nn.Module | None = None
        if cfg.ffn:
            self.ffn = nn.Sequential(
                nn.LayerNorm(d),
                nn.Linear(d, cfg.ffn_mult * d),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.ffn_mult * d, d),
                nn.Dropout(cfg.dropout),
            )

    def forward(
        self, q: torch.Tensor, a: torch.Tensor, valid: torch.Tensor, last: torch.Tensor | None = None
    ) -> torch.Tensor:
        # q, a (B, U, D); valid (B, U) float: rows where the query modality is present
        # last (B,) long: compute only that row of each window (the last it holds; see LPGNet.forward)
        w = valid.unsqueeze(-1)
        if last is not None:
            # the last row's prefix is the whole window: rows after it are padding, weighted 0
            g = (a * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1, D)
            q, a, valid, w = (take_rows(x, last) for x in (q, a, valid, w))
        elif self.causal:
            g = torch.cumsum(a * w, 1) / torch.cumsum(w, 1).clamp(min=1.0)  # (B, U, D) prefix mean
        else:
            g = (a * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1, D)
            g = g.expand_as(a)
        g = self.act(self.norm(self.compress(g), valid))
        a_conv = a + g
        out = q + a_conv
        if self.ffn is not None:
            out = out + self.ffn(a_conv)
        return out * w


class ParallelInteractionAttention(nn.Module):
    """One of the four parallel streams (sec. 3.2): queries of one modality over keys of another.

    Scaled dot-product attention with a key mask (key modality present, and j <= i in causal mode),
    followed by the residual enhancement. A query row that sees no key at all gets zero.
    """

    def __init__(self, cfg: LPGNetConfig) -> None:
        super().__init__()
        d, self.heads = cfg.hidden, cfg.heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(cfg.dropout)
        self.enhance = ResidualEnhancement(cfg)
        # per-head log-slope of the distance penalty; exp(-4) ~ 0.02 per utterance to start
        self.log_slope = nn.Parameter(torch.full((cfg.heads,), -4.0)) if cfg.recency_bias else None

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        visible: torch.Tensor,
        distance: torch.Tensor,
        qv: torch.Tensor,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # x (B, U, D) queries; y (B, U, D) keys/values; visible (B, U, U) bool; distance (U, U); qv (B, U)
        # last (B,) long: return that row of each window only, (B, 1, D)
        b, u, d = x.shape
        h, dh = self.heads, d // self.heads
        q = self.q(x).view(b, u, h, dh).transpose(1, 2)  # (B, H, U, dh)
        k = self.k(y).view(b, u, h, dh).transpose(1, 2)
        v = self.v(y).view(b, u, h, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, U, U)
        if self.log_slope is not None:
            scores = scores - self.log_slope.exp().view(1, h, 1, 1) * distance
        scores = scores.masked_fill(~visible.unsqueeze(1), MASK_FILL)
        attn = self.drop(torch.softmax(scores, -1))
        has_key = visible.any(-1).to(x.dtype).view(b, 1, u, 1)  # all-masked rows -> 0
        out = (attn @ v * has_key).transpose(1, 2).reshape(b, u, d)  # (B, U, D)
        return self.enhance(x, self.o(out), qv, last)


class DualGatedFusion(nn.Module):
    """Dual gated fusion (sec. 3.4).

    Stage 1, per modality: each stream s is gated, s * sigmoid(W s), the gated streams whose query
    is that modality are concatenated and mapped back to D. Stage 2: a softmax over modalities
    (masked to the present ones) weighs the two modality vectors into one.
    """

    def __init__(self, cfg: LPGNetConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.streams = cfg.streams
        self.gated = cfg.gated_fusion
        self.gates = nn.ModuleDict({q + k: nn.Linear(d, d) for q, k in self.streams})
        mods = sorted({q for q, _ in self.streams})
        self.merge = nn.ModuleDict({m: nn.Linear(d * sum(q == m for q, _ in self.streams), d) for m in mods})
        self.score = nn.Linear(d, 1, bias=False)  # a shared bias would cancel in the softmax

    def forward(
        self, streams: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # streams: "ta" -> (B, U, D); present: "t"/"a" -> (B, U) float
        per_mod: dict[str, torch.Tensor] = {}
        for m, merge in self.merge.items():
            parts = []
            for q, k in self.streams:
                if q == m:
                    s = streams[q + k]
                    parts.append(s * torch.sigmoid(self.gates[q + k](s)) if self.gated else s)
            per_mod[m] = merge(torch.cat(parts, -1))  # (B, U, D)
        mods = list(per_mod)
        h = torch.stack([per_mod[m] for m in mods], 2)  # (B, U, M, D)
        p = torch.stack([present[m] for m in mods], 2)  # (B, U, M)
        if self.gated:
            logits = self.score(h).squeeze(-1).masked_fill(p == 0, MASK_FILL)  # (B, U, M)
            w = torch.softmax(logits, -1) * p
        else:  # ablation: plain average of the present modalities
            w = p / p.sum(-1, keepdim=True).clamp(min=1.0)
        fused = (h * w.unsqueeze(-1)).sum(2)  # (B, U, D)
        return fused, per_mod


class LPGNet(nn.Module):
    """The whole network: projection -> parallel attentions -> dual gated fusion -> classifiers."""

    def __init__(self, cfg: LPGNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, k = cfg.hidden, cfg.kernel_size
        self.text_norm, self.audio_norm = InputNorm(cfg.text_dim), InputNorm(cfg.audio_dim)
        if cfg.audio_transform == "prosody8-log" and cfg.audio_dim != 8:  # checked on the real input size
            raise ValueError(
                f"audio_transform 'prosody8-log' needs 8-d prosody-8 audio, got {cfg.audio_dim}-d"
            )
        self.audio_transform = Prosody8Log() if cfg.audio_transform == "prosody8-log" else None
        # Conv1d over the utterance axis; causal mode pads on the left only, so no future leaks in
        self.pad = (k - 1, 0) if cfg.context == "causal" else ((k - 1) // 2, k // 2)
        self.text_proj = nn.Conv1d(cfg.text_dim, d, k)
        self.audio_proj = nn.Conv1d(cfg.audio_dim, d, k)
        self.drop = nn.Dropout(cfg.dropout)
        self.audio_conv_norm = (
            ConversationNorm(cfg.audio_prior, cfg.context == "causal", mean_prior=cfg.audio_mean_prior)
            if cfg.audio_norm == "conversation"
            else None
        )
        self.attn = nn.ModuleDict({q + kk: ParallelInteractionAttention(cfg) for q, kk in cfg.streams})
        self.fusion = DualGatedFusion(cfg)
        self.classifier = nn.Linear(d, cfg.num_classes)
        self.text_head = nn.Sequential(nn.ReLU(), nn.Linear(d, cfg.num_classes))
        self.audio_head = nn.Sequential(nn.ReLU(), nn.Linear(d, cfg.num_classes))

    def _project(
        self,
        x: torch.Tensor,
        norm: InputNorm,
        conv: nn.Conv1d,
        m: torch.Tensor,
        conversation: ConversationNorm | None = None,
    ) -> torch.Tensor:
        x = norm(x) * m.unsqueeze(-1)  # missing / padded rows are exact zeros
        if conversation is not None:
            x = conversation(x, m)
        x = F.pad(x.transpose(1, 2), self.pad)  # (B, Dx, U + k - 1)
        return self.drop(conv(x).transpose(1, 2)) * m.unsqueeze(-1)  # (B, U, D)

    def forward(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        text_mask: torch.Tensor,
        audio_mask: torch.Tensor,
        last_only: bool = False,
    ) -> LPGNetOutput:
        """text (B, U, Dt), audio (B, U, Da), masks (B, U) bool: modality present at that utterance.

        Padded utterances have both masks False. Returns logits (B, U, C) of the fused teacher and
        the two students; rows of padded utterances are meaningless and must be ignored.

        `last_only` (eval mode): (B, 1, C), the rows each window ends with (its last row with either
        mask; windows padded on the right), equal to those rows of the full output. What the service
        answers: every stream still attends over the whole window, but the compression, FFN, fusion and
        classifiers run for one row instead of U (at 64 utterances 35-55 % less time, bench/RESULTS.md).
        """
        cfg = self.cfg
        last = None
        if last_only:
            if self.training:
                raise ValueError("last_only is for inference: BatchNorm statistics need every row")
            last = last_rows(text_mask, audio_mask)  # before the masks change
        if cfg.modalities == "text":
            audio_mask = torch.zeros_like(audio_mask)
        elif cfg.modalities == "audio":
            text_mask = torch.zeros_like(text_mask)
        present = {"t": text_mask.to(text.dtype), "a": audio_mask.to(text.dtype)}
        feats = {
            "t": self._project(text, self.text_norm, self.text_proj, present["t"]),
            "a": self._project(
                self.read_audio(audio), self.audio_norm, self.audio_proj, present["a"], self.audio_conv_norm
            ),
        }
        u = text.shape[1]
        idx = torch.arange(u, device=text.device)
        distance = (idx.view(-1, 1) - idx.view(1, -1)).abs().to(text.dtype)  # (U, U)
        order = (
            idx.view(1, -1) <= idx.view(-1, 1)
            if cfg.context == "causal"
            else torch.ones_like(distance, dtype=torch.bool)
        )
        masks = {"t": text_mask, "a": audio_mask}
        streams = {}
        for name, block in self.attn.items():
            q, k = name[0], name[1]
            visible = order.unsqueeze(0) & masks[k].unsqueeze(1) & masks[q].unsqueeze(2)  # (B, U, U)
            streams[name] = block(feats[q], feats[k], visible, distance, present[q], last)
        if last is not None:
            present = {m: take_rows(p, last) for m, p in present.items()}
        fused, per_mod = self.fusion(streams, present)
        logits = self.classifier(self.drop(fused))
        zeros = torch.zeros_like(logits)
        text_logits = self.text_head(per_mod["t"]) if "t" in per_mod else zeros
        audio_logits = self.audio_head(per_mod["a"]) if "a" in per_mod else zeros
        return LPGNetOutput(logits, text_logits, audio_logits)

    def read_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """The audio vectors as the network standardises them (`cfg.audio_transform`); the training
        statistics of `set_normalization` are taken over this reading."""
        return audio if self.audio_transform is None else self.audio_transform(audio)

    @torch.no_grad()
    def set_normalization(self, stats: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load feature statistics {"text": {"mean", "std"}, "audio": {...}} computed on training data
        (audio as `read_audio` reads it)."""
        for key, norm in (("text", self.text_norm), ("audio", self.audio_norm)):
            if key in stats:
                norm.mean.copy_(torch.as_tensor(stats[key]["mean"], dtype=torch.float32))
                norm.std.copy_(torch.as_tensor(stats[key]["std"], dtype=torch.float32).clamp(min=1e-6))

    def normalization(self) -> dict[str, dict[str, list[float]]]:
        return {
            "text": {"mean": self.text_norm.mean.tolist(), "std": self.text_norm.std.tolist()},
            "audio": {"mean": self.audio_norm.mean.tolist(), "std": self.audio_norm.std.tolist()},
        }


def last_rows(text_mask: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the index of each window's last row with either mask (windows are padded on the right)."""
    rows = torch.arange(text_mask.shape[1], device=text_mask.device)
    return ((text_mask | audio_mask).long() * rows).amax(1)


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (B, U, ...) -> (B, 1, ...): row rows[b] of window b."""
    index = rows.view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])
    return torch.gather(x, 1, index)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "LPGNet",
    "LPGNetConfig",
    "LPGNetOutput",
    "DualGatedFusion",
    "ParallelInteractionAttention",
    "ResidualEnhancement",
    "count_parameters",
    "last_rows",
    "paper_config",
    "take_rows",
]
