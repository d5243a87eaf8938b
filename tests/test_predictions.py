"""Prediction and its stored format (app/predictions.py): the stores' round trips are in test_store.py."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.predictions import (
    PREDICTION_FORMAT,
    Prediction,
    PredictionFormatError,
    decode_prediction,
    encode_prediction,
)

PREDICTION = Prediction(
    emotion="angry",
    probabilities={"angry": 0.71, "happy": 0.04, "neutral": 0.15, "sad": 0.1},
    modalities=("text", "audio"),
    transcript_truncated=False,
    context_size=4,
    model_name="lpgnet",
    model_version="3f2a9c1d0b7e",
    timings_ms={
        "decode": 2.1,
        "encode_text": 9.8,
        "encode_audio": 24.0,
        "store": 0.6,
        "model": 3.2,
        "total": 38.5,
    },
)
# The stored text of PREDICTION, byte for byte. If this test fails, the stored format changed: Redis
# already holds records of the old one, so bump PREDICTION_FORMAT and keep decoding the old version,
# instead of editing this string.
GOLDEN_V1 = (
    '{"v":1,"emotion":"angry","probabilities":{"angry":0.71,"happy":0.04,"neutral":0.15,"sad":0.1},'
    '"modalities":["text","audio"],"transcript_truncated":false,"context_size":4,'
    '"model":{"name":"lpgnet","version":"3f2a9c1d0b7e"},'
    '"timings_ms":{"decode":2.1,"encode_text":9.8,"encode_audio":24.0,"store":0.6,"model":3.2,"total":38.5}}'
)


def test_the_stored_format_of_a_fixed_prediction_never_changes_unnoticed() -> None:
    assert PREDICTION_FORMAT == 1
    assert encode_prediction(PREDICTION) == GOLDEN_V1
    assert decode_prediction(GOLDEN_V1) == PREDICTION
    assert decode_prediction(GOLDEN_V1.encode()) == PREDICTION  # Redis hands back bytes


def test_unversioned_records_of_earlier_releases_decode_as_version_0() -> None:
    record = json.loads(GOLDEN_V1)
    del record["v"]
    assert decode_prediction(json.dumps(record)) == PREDICTION


@pytest.mark.parametrize("version", [2, 99, -1, "1", None, True, 1.5])
def test_an_unknown_format_version_is_refused_with_a_clear_error(version: Any) -> None:
    record = {**json.loads(GOLDEN_V1), "v": version}
    with pytest.raises(PredictionFormatError, match="unknown to this release, which reads 0, 1"):
        decode_prediction(json.dumps(record))


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", '{"v": 1, "emotion": "angry"}', GOLDEN_V1.replace('"model":{', '"model":[{', 1)],
)
def test_a_malformed_record_is_a_format_error_not_a_crash(raw: str) -> None:
    with pytest.raises(PredictionFormatError):
        decode_prediction(raw)


def test_a_prediction_is_frozen_all_the_way_down() -> None:
    probabilities = {"angry": 0.5, "sad": 0.5}
    p = dataclasses.replace(PREDICTION, probabilities=probabilities)
    probabilities["angry"] = 1.0  # the caller's dict is copied, not shared
    assert p.probabilities["angry"] == 0.5
    with pytest.raises(TypeError):
        p.probabilities["sad"] = 0.0  # type: ignore[index]
    with pytest.raises(TypeError):
        p.timings_ms["total"] = 0.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.emotion = "sad"  # type: ignore[misc]


def test_from_probabilities_names_the_argmax_in_the_checkpoints_label_order() -> None:
    checkpoint: Any = SimpleNamespace(labels=["sad", "angry", "happy"], name="lpgnet", version="v9")
    timings = {"model": 1.5, "total": 3.0}
    p = Prediction.from_probabilities(
        np.array([0.2, 0.5, 0.3], dtype=np.float32),
        checkpoint,
        modalities=["text"],
        transcript_truncated=True,
        context_size=2,
        timings_ms=timings,
    )
    assert p.emotion == "angry"
    assert list(p.probabilities) == ["sad", "angry", "happy"]
    assert p.probabilities["angry"] == float(np.float32(0.5))
    assert all(type(v) is float for v in p.probabilities.values())  # numpy scalars would not JSON-encode
    assert (p.modalities, p.context_size, p.model_name, p.model_version) == (("text",), 2, "lpgnet", "v9")
    timings["total"] = 99.0  # the engine's dict, changed later, does not reach the answer
    assert p.timings_ms == {"model": 1.5, "total": 3.0}
    assert decode_prediction(encode_prediction(p)) == p
    tie = Prediction.from_probabilities(
        [0.4, 0.4, 0.2], checkpoint, modalities=[], transcript_truncated=False, context_size=1, timings_ms={}
    )
    assert tie.emotion == "sad"  # the first of equals, as argmax
    with pytest.raises(ValueError):  # one probability per label, no fewer
        Prediction.from_probabilities(
            [1.0], checkpoint, modalities=[], transcript_truncated=False, context_size=1, timings_ms={}
        )
