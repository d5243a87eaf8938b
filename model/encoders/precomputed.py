"""Encoders whose vectors were computed ahead of time and stored with a corpus.

The IEMOCAP table has no audio, only the 8 prosodic statistics of each utterance (`prosody` column).
`PrecomputedEncoder.prosody8()` passes those vectors through under the spec `prosody8` - the very
spec `Prosody8Encoder` has - so a model trained on the column is served with features computed live
from uploaded audio, and `check_encoders_match` accepts the pair. This is sound only because the
live encoder follows the column's definition exactly (see `model.encoders.prosody`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.encoders.base import EncoderSpec, as_float32_matrix
from model.encoders.prosody import PROSODY8_SPEC


class PrecomputedEncoder:
    """Identity encoder over stored vectors: `encode_batch(vectors) -> (N, dim)`.

    Items are sequences of `spec.dim` finite floats (e.g. a JSON list). A missing vector (None) or one
    of the wrong length raises `ValueError`: deciding what a missing feature means is the caller's job.
    `sample_rate` is None: no waveform is ever read.
    """

    sample_rate: int | None = None

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec

    @classmethod
    def prosody8(cls) -> PrecomputedEncoder:
        """The IEMOCAP `prosody` column, under the same spec as the live `Prosody8Encoder`."""
        return cls(PROSODY8_SPEC)

    def encode_batch(self, items: Sequence[Sequence[float] | np.ndarray]) -> torch.Tensor:
        """items: N vectors of length dim -> (N, dim) float32."""
        rows = []
        for i, item in enumerate(items):
            if item is None:
                raise ValueError(f"item {i}: no precomputed {self.spec.name} vector")
            row = np.asarray(item, dtype=np.float64).reshape(-1)
            if row.shape != (self.spec.dim,):
                raise ValueError(
                    f"item {i}: expected {self.spec.dim} values for {self.spec.name}, got {row.size}"
                )
            if not np.isfinite(row).all():
                raise ValueError(f"item {i}: {self.spec.name} vector holds NaN or infinite values")
            rows.append(row)
        return as_float32_matrix(rows, self.spec.dim)
