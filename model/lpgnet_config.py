"""LPGNet's configuration: sizes, context mode, ablations and the audio reading, checked on creation.

Kept apart from the network (`model.lpgnet`, which re-exports it) so that what a checkpoint records about
its network reads in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

ContextMode = Literal["causal", "bidirectional"]
Modalities = Literal["both", "text", "audio"]


@dataclass(frozen=True)
class LPGNetConfig:
    text_dim: int = 768  # Dt: input text vector (BERT [CLS] in the paper)
    audio_dim: int = 768  # Da: input audio vector (emotion2vec utterance mean in the paper)
    hidden: int = 768  # D: the paper's model size
    num_classes: int = 4  # C
    heads: int = 1  # H: the paper uses single-head scaled dot-product attention
    kernel_size: int = 1  # projection Conv1d kernel over utterances (paper: 1x1)
    dropout: float = 0.1
    ffn_mult: int = 2  # FFN inner size = ffn_mult * D
    leaky_slope: float = 0.01  # LeakyReLU of the global compression
    context: ContextMode = "bidirectional"
    modalities: Modalities = "both"  # "text"/"audio": the paper's unimodal rows
    intra_attention: bool = True  # t->t and a->a streams (Table 3 ablation)
    inter_attention: bool = True  # t<-a and a<-t streams (Table 3 ablation)
    ffn: bool = True  # second residual stage (Table 3 ablation)
    gated_fusion: bool = True  # dual gated fusion, else concat + linear (Table 3 ablation)
    recency_bias: bool = False  # learnable ALiBi-style distance penalty: relative, so windowing is safe
    # audio standardisation: "global" (training-set statistics only) or "conversation" (then also by
    # the statistics of the conversation's audio so far, shrunk towards the global ones by a prior
    # worth `audio_prior` utterances): speaker and microphone levels cancel out
    audio_norm: Literal["global", "conversation"] = "global"
    audio_prior: float = 4.0
    # None: the prior (mean 0, variance 1) is worth `audio_prior` utterances for the mean too; m: it
    # is worth m for the mean and `audio_prior` for the spread only (m = 0: the conversation's own mean,
    # so a constant shift of its features, such as a gain read as logs, is removed exactly)
    audio_mean_prior: float | None = None
    # "prosody8-log": the level features of prosody-8 read as logs (a microphone's gain becomes a shift,
    # which the conversation's statistics then remove) before any standardisation; "none": as given
    audio_transform: Literal["none", "prosody8-log"] = "none"

    def __post_init__(self) -> None:
        if self.context not in ("causal", "bidirectional"):
            raise ValueError(f"context must be 'causal' or 'bidirectional', got {self.context!r}")
        if self.modalities not in ("both", "text", "audio"):
            raise ValueError(f"modalities must be 'both', 'text' or 'audio', got {self.modalities!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if not (self.intra_attention or self.inter_attention):
            raise ValueError("at least one of intra_attention / inter_attention must be on")
        if self.modalities != "both" and not self.intra_attention:
            raise ValueError("a unimodal model needs intra-modal attention")
        if self.audio_norm not in ("global", "conversation"):
            raise ValueError(f"audio_norm must be 'global' or 'conversation', got {self.audio_norm!r}")
        if self.audio_mean_prior is not None and (
            self.audio_mean_prior < 0 or self.audio_norm != "conversation"
        ):
            raise ValueError("audio_mean_prior needs audio_norm = 'conversation' and a value >= 0")
        if self.audio_transform not in ("none", "prosody8-log"):
            raise ValueError(f"audio_transform must be 'none' or 'prosody8-log': {self.audio_transform!r}")

    @property
    def streams(self) -> tuple[tuple[str, str], ...]:
        """(query modality, key modality) pairs of the parallel attentions that exist."""
        if self.modalities != "both":
            m = self.modalities[0]
            return ((m, m),)
        pairs: list[tuple[str, str]] = []
        if self.intra_attention:
            pairs += [("t", "t"), ("a", "a")]
        if self.inter_attention:
            pairs += [("t", "a"), ("a", "t")]
        return tuple(pairs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paper_config(**overrides: Any) -> LPGNetConfig:
    """The paper's size: 768-d BERT and emotion2vec inputs, D = 768, 4 IEMOCAP classes."""
    base: dict[str, Any] = dict(text_dim=768, audio_dim=768, hidden=768, num_classes=4)
    base.update(overrides)
    return LPGNetConfig(**base)


__all__ = ["ContextMode", "LPGNetConfig", "Modalities", "paper_config"]
