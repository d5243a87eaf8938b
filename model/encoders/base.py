"""The one interface every feature extractor implements.

LPGNet eats one text vector and one audio vector per utterance. Whatever produces them (BERT,
emotion2vec, MiniLM, prosodic statistics, precomputed corpus columns) is an `Encoder`: it turns a
batch of inputs into a float32 tensor of shape (N, D). Training builds a profile's encoders with
`model.encoders.profiles.build_encoders`; the service, evaluation and export rebuild a checkpoint's with
`model.encoders.factory.checkpoint_encoders`, which checks them against the specs it recorded, so what a
checkpoint was trained on is exactly what serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

Modality = Literal["text", "audio"]


@dataclass(frozen=True)
class EncoderSpec:
    """What a checkpoint records about an encoder; two specs must match for train/serve parity.

    `name` identifies the extractor and its weights (e.g. "hf:bert-base-uncased:cls"),
    `version` changes whenever its outputs would change, `dim` is D.
    """

    name: str
    version: str
    dim: int
    modality: Modality

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        return cls(name=str(d["name"]), version=str(d["version"]), dim=int(d["dim"]), modality=d["modality"])

    def summary(self) -> str:
        """For logs: `name (version v, dim D)`."""
        return f"{self.name} (version {self.version}, dim {self.dim})"

    def matches(self, other: EncoderSpec) -> bool:
        return (self.name, self.version, self.dim, self.modality) == (
            other.name,
            other.version,
            other.dim,
            other.modality,
        )


@runtime_checkable
class Encoder(Protocol):
    """Batch feature extractor.

    Text encoders take `Sequence[str]`; audio encoders take `Sequence[np.ndarray]` of mono float32
    waveforms already at `sample_rate` Hz. `encode_batch` returns a float32 CPU tensor (N, dim).
    """

    spec: EncoderSpec
    sample_rate: int | None  # audio encoders: the rate they expect; text encoders: None

    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor: ...


class EncoderMismatchError(RuntimeError):
    """A checkpoint was trained on other encoders than the ones configured to serve it."""


def check_encoders_match(expected: dict[str, EncoderSpec], actual: dict[str, EncoderSpec]) -> None:
    """Raise `EncoderMismatchError` naming both sides when the configured encoders differ."""
    problems = []
    for modality in ("text", "audio"):
        want, got = expected.get(modality), actual.get(modality)
        if want is None and got is None:
            continue
        if want is None or got is None or not want.matches(got):
            problems.append(f"{modality}: checkpoint was trained on {want}, configured encoder is {got}")
    if problems:
        raise EncoderMismatchError("; ".join(problems))


def as_float32_matrix(rows: Sequence[np.ndarray] | np.ndarray, dim: int) -> torch.Tensor:
    """Stack per-item vectors into a (N, dim) float32 tensor, accepting an empty batch."""
    if len(rows) == 0:
        return torch.zeros((0, dim), dtype=torch.float32)
    return torch.from_numpy(np.stack([np.asarray(r, dtype=np.float32) for r in rows]))
