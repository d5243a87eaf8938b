"""eGeMAPS v02 functionals (Eyben et al., 2016) through openSMILE: 88 hand-crafted acoustic statistics.

The features a checkpoint's voice expert reads (`model.voice`), or an audio encoder of its own: 16 kHz
mono float32 in, (N, 88) float32 out. openSMILE fills features of
segments too short to measure (e.g. F0 of a 10 ms clip) with NaN; they are returned as 0.0 so a
downstream network never sees NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from model.encoders.base import EncoderSpec, as_float32_matrix

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
EGEMAPS_DIM = 88


class EGeMAPSEncoder:
    """openSMILE eGeMAPSv02 functionals, one 88-d vector per utterance.

    The spec version carries openSMILE's major.minor version: its feature code defines the numbers.
    """

    sample_rate: int | None = SAMPLE_RATE

    def __init__(self) -> None:
        try:
            import opensmile
        except ModuleNotFoundError as exc:  # a dependency (voice experts read it): say how to get it
            raise ModuleNotFoundError(
                "the eGeMAPS encoder (a checkpoint's voice expert reads it) needs openSMILE, a dependency "
                "of lpgnet-erc: pip install 'opensmile>=2.6,<2.7'",
                name="opensmile",
            ) from exc

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        major_minor = ".".join(opensmile.__version__.split(".")[:2])
        self.spec = EncoderSpec(
            name="egemaps:eGeMAPSv02", version=f"opensmile-{major_minor}", dim=EGEMAPS_DIM, modality="audio"
        )
        self.feature_names: list[str] = list(self._smile.feature_names)

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """items: N waveforms (S_i,) float32 at 16 kHz -> (N, 88) float32."""
        rows = []
        for wave in items:
            values = self._smile.process_signal(np.asarray(wave, dtype=np.float32), SAMPLE_RATE).to_numpy()[0]
            if np.isnan(values).any():
                logger.debug(
                    "eGeMAPS: %d features undefined for a %d-sample clip, set to 0",
                    int(np.isnan(values).sum()),
                    len(wave),
                )
            rows.append(np.nan_to_num(values, nan=0.0))
        return as_float32_matrix(rows, self.spec.dim)
