"""EGeMAPSEncoder: 88 finite openSMILE functionals per utterance, also for clips too short to measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest_encoders import noise_waves

pytest.importorskip("opensmile")


def test_egemaps_gives_88_finite_values_per_utterance() -> None:
    from model.encoders.egemaps import EGeMAPSEncoder

    encoder = EGeMAPSEncoder()
    assert encoder.spec.name == "egemaps:eGeMAPSv02" and encoder.spec.dim == 88
    assert encoder.sample_rate == 16_000 and len(encoder.feature_names) == 88
    out = encoder.encode_batch(noise_waves([1.0, 0.4]) + [np.zeros(80, np.float32)])
    assert out.shape == (3, 88) and out.dtype == torch.float32 and torch.isfinite(out).all()
