"""What the engine answers for one utterance, and the versioned form in which the stores keep it.

`Prediction` is the contract engine -> store -> route: the engine builds it from the network's
probabilities (`Prediction.from_probabilities`), the stores keep `encode_prediction(p)` and give back
`decode_prediction(raw)`, and each route maps it to its response schema explicitly. So a change of the
HTTP response cannot change what is stored in Redis, and a change of the stored format is a new
`PREDICTION_FORMAT`, read side by side with the old ones.

Stored formats (compact JSON objects):

    v0  what releases before the format was versioned stored: the POST's prediction fields, no "v"
        {"emotion", "probabilities", "modalities", "transcript_truncated", "context_size",
         "model": {"name", "version"}, "timings_ms"}
    v1  the same fields, with "v": 1 first

A record of any other version (written by a newer release during a rolling upgrade, or not ours) is
refused with `PredictionFormatError`, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint

PREDICTION_FORMAT = 1  # the version `encode_prediction` writes
_READABLE_FORMATS = (0, 1)  # v0: unversioned records of earlier releases, the same fields as v1


class PredictionFormatError(ValueError):
    """A stored prediction this release cannot read (unknown format version, or a malformed record)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for one utterance, as the attempt that scored it computed it (a replay repeats it)."""

    emotion: str  # the most probable label
    probabilities: Mapping[str, float]  # label -> probability, in the checkpoint's label order
    modalities: tuple[str, ...]  # what the model used for this utterance ("text", "audio")
    transcript_truncated: bool  # the transcript was longer than the text encoder reads
    context_size: int  # utterances the network saw, this one included (<= K)
    model_name: str  # the checkpoint's name and version
    model_version: str
    timings_ms: Mapping[str, float]  # stage -> milliseconds (`app.metrics.STAGES`)

    def __post_init__(self) -> None:
        # read-only copies: frozen all the way down, so no holder can change another's answer
        object.__setattr__(self, "probabilities", MappingProxyType(dict(self.probabilities)))
        object.__setattr__(self, "timings_ms", MappingProxyType(dict(self.timings_ms)))
        object.__setattr__(self, "modalities", tuple(self.modalities))

    @classmethod
    def from_probabilities(
        cls,
        probabilities: Iterable[float],
        checkpoint: Checkpoint,
        *,
        modalities: Sequence[str],
        transcript_truncated: bool,
        context_size: int,
        timings_ms: Mapping[str, float],
    ) -> Prediction:
        """The prediction of the network's last-row probabilities (C,), one per label of `checkpoint`,
        which also names the model."""
        by_label = {label: float(p) for label, p in zip(checkpoint.labels, probabilities, strict=True)}
        return cls(
            emotion=max(by_label, key=by_label.__getitem__),  # the first of equals, as argmax
            probabilities=by_label,
            modalities=tuple(modalities),
            transcript_truncated=transcript_truncated,
            context_size=context_size,
            model_name=checkpoint.name,
            model_version=checkpoint.version,
            timings_ms=timings_ms,
        )


def encode_prediction(prediction: Prediction) -> str:
    """The stored form: compact JSON of format `PREDICTION_FORMAT`, the same text in every store."""
    record = {
        "v": PREDICTION_FORMAT,
        "emotion": prediction.emotion,
        "probabilities": dict(prediction.probabilities),
        "modalities": list(prediction.modalities),
        "transcript_truncated": prediction.transcript_truncated,
        "context_size": prediction.context_size,
        "model": {"name": prediction.model_name, "version": prediction.model_version},
        "timings_ms": dict(prediction.timings_ms),
    }
    return json.dumps(record, separators=(",", ":"))


def decode_prediction(raw: str | bytes) -> Prediction:
    """A stored prediction of format v1, or v0 (unversioned, from earlier releases).

    Raises `PredictionFormatError` for any other version or a record without the fields of its format.
    """
    try:
        record: Any = json.loads(raw)
    except ValueError as exc:
        raise PredictionFormatError("a stored prediction is not JSON") from exc
    if not isinstance(record, dict):
        raise PredictionFormatError("a stored prediction is not a JSON object")
    version = record.get("v", 0)
    if isinstance(version, bool) or version not in _READABLE_FORMATS:
        raise PredictionFormatError(
            f"stored prediction format {version!r} is unknown to this release, which reads "
            f"{', '.join(map(str, _READABLE_FORMATS))}: was it written by a newer one?"
        )
    try:
        return Prediction(
            emotion=str(record["emotion"]),
            probabilities={str(k): float(p) for k, p in record["probabilities"].items()},
            modalities=tuple(str(m) for m in record["modalities"]),
            transcript_truncated=bool(record["transcript_truncated"]),
            context_size=int(record["context_size"]),
            model_name=str(record["model"]["name"]),
            model_version=str(record["model"]["version"]),
            timings_ms={str(k): float(ms) for k, ms in record["timings_ms"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PredictionFormatError(
            f"a stored prediction of format {version} lacks or mistypes {exc}"
        ) from exc


__all__ = [
    "PREDICTION_FORMAT",
    "Prediction",
    "PredictionFormatError",
    "decode_prediction",
    "encode_prediction",
]
