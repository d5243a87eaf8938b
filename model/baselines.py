"""Baselines trained and evaluated in the same harness as LPGNet (same features, split, selection).

- `linear`: per utterance, the standardised text and audio vectors concatenated -> Linear (the
  paper's "Linear" row); no context at all.
- `gru`: the same concatenation -> Linear + ReLU -> a GRU over the dialogue's utterances ->
  Linear. Causal context = unidirectional GRU; bidirectional context = biGRU.

LPGNet's unimodal rows are LPGNet itself with `LPGNetConfig(modalities="text"|"audio")`.

Both baselines return `LPGNetOutput` (students = zeros) so the trainer, the loss (with the student
weights set to 0) and the evaluator treat every model alike. A missing modality is a zero block
after standardisation. Baseline files hold the same fields as an LPGNet checkpoint plus `kind`.

Dimension legend: B dialogues, U utterances, Dt/Da text/audio dims, D hidden, C classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from model.checkpoint import SavedModel
from model.inputs import InputNorm
from model.lpgnet import LPGNetOutput

BaselineKind = Literal["linear", "gru"]
BASELINE_FORMAT = 1


@dataclass(frozen=True)
class BaselineConfig:
    kind: BaselineKind = "linear"
    text_dim: int = 768
    audio_dim: int = 768
    hidden: int = 128  # GRU state size (per direction); unused by `linear`
    num_classes: int = 4
    context: Literal["causal", "bidirectional"] = "causal"
    modalities: Literal["both", "text", "audio"] = "both"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "gru"):
            raise ValueError(f"unknown baseline {self.kind!r}")
        if self.context not in ("causal", "bidirectional"):
            raise ValueError(f"context must be 'causal' or 'bidirectional', got {self.context!r}")
        if self.modalities not in ("both", "text", "audio"):
            raise ValueError(f"modalities must be 'both', 'text' or 'audio', got {self.modalities!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Inputs(nn.Module):
    """Standardise each modality, zero where missing (or unused), concatenate: (B, U, Dt + Da)."""

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__()
        self.use_text, self.use_audio = cfg.modalities != "audio", cfg.modalities != "text"
        self.text_norm, self.audio_norm = InputNorm(cfg.text_dim), InputNorm(cfg.audio_dim)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, tm: torch.Tensor, am: torch.Tensor
    ) -> torch.Tensor:
        t = self.text_norm(text) * (tm.unsqueeze(-1) & self.use_text).to(text.dtype)
        a = self.audio_norm(audio) * (am.unsqueeze(-1) & self.use_audio).to(text.dtype)
        return torch.cat([t, a], -1)


class _Baseline(nn.Module):
    cfg: BaselineConfig

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inputs = _Inputs(cfg)

    @torch.no_grad()
    def set_normalization(self, stats: dict[str, dict[str, torch.Tensor]]) -> None:
        for key, norm in (("text", self.inputs.text_norm), ("audio", self.inputs.audio_norm)):
            if key in stats:
                mean = torch.as_tensor(stats[key]["mean"], dtype=torch.float32)
                std = torch.as_tensor(stats[key]["std"], dtype=torch.float32).clamp(min=1e-6)
                norm.load_state_dict({"mean": mean, "std": std})

    def normalization(self) -> dict[str, dict[str, list[float]]]:
        out = {}
        for key, norm in (("text", self.inputs.text_norm), ("audio", self.inputs.audio_norm)):
            sd = norm.state_dict()
            out[key] = {"mean": sd["mean"].tolist(), "std": sd["std"].tolist()}
        return out

    def _out(self, logits: torch.Tensor) -> LPGNetOutput:
        zeros = torch.zeros_like(logits)
        return LPGNetOutput(logits, zeros, zeros)


class LinearBaseline(_Baseline):
    """Per-utterance linear classifier over [text; audio]."""

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.text_dim + cfg.audio_dim, cfg.num_classes)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, text_mask: torch.Tensor, audio_mask: torch.Tensor
    ):
        return self._out(self.classifier(self.drop(self.inputs(text, audio, text_mask, audio_mask))))


class GRUBaseline(_Baseline):
    """A (bi)GRU over the utterance vectors of each dialogue."""

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__(cfg)
        d = cfg.hidden
        self.proj = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(cfg.text_dim + cfg.audio_dim, d), nn.ReLU()
        )
        bi = cfg.context == "bidirectional"
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=bi)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d * (2 if bi else 1), cfg.num_classes)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, text_mask: torch.Tensor, audio_mask: torch.Tensor
    ):
        x = self.proj(self.inputs(text, audio, text_mask, audio_mask))  # (B, U, D)
        b, u, _ = x.shape
        # length = last utterance with any modality + 1: trailing padding never reaches the reverse GRU
        present = (text_mask | audio_mask).to(torch.long)  # (B, U)
        idx = torch.arange(1, u + 1, device=x.device)
        lengths = (present * idx).amax(1).clamp(min=1).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=u)  # (B, U, D or 2D)
        return self._out(self.classifier(self.drop(h)))


def build_baseline(cfg: BaselineConfig) -> _Baseline:
    return LinearBaseline(cfg) if cfg.kind == "linear" else GRUBaseline(cfg)


@dataclass
class BaselineCheckpoint(SavedModel[_Baseline]):
    """A trained baseline with the same contract fields as `model.checkpoint.Checkpoint`."""

    name: str = "baseline"

    @property
    def config(self) -> BaselineConfig:
        return self.model.cfg


def save_baseline(ckpt: BaselineCheckpoint, path: str | Path) -> Path:
    """The checkpoint's own fields and atomic write, marked `kind: baseline` with its own format."""
    return ckpt.write(path, format_version=BASELINE_FORMAT, kind="baseline")


def load_baseline(path: str | Path) -> BaselineCheckpoint:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("kind") != "baseline" or payload.get("format_version") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a baseline file of format {BASELINE_FORMAT}")
    return BaselineCheckpoint.from_payload(build_baseline(BaselineConfig(**payload["config"])), payload)


__all__ = [
    "BaselineCheckpoint",
    "BaselineConfig",
    "GRUBaseline",
    "LinearBaseline",
    "build_baseline",
    "load_baseline",
    "save_baseline",
]
