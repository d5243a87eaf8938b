"""Request and response models of the HTTP API (pydantic; examples show up in the OpenAPI docs)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import wave
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from app.ids import ID_MAX_CHARS, ID_PATTERN

MAX_TRANSCRIPT_CHARS = 20_000
MAX_SPEAKER_CHARS = 128
# Text fields may hold tab and line breaks but no other C0/C1 control character (NUL, ESC, DEL...):
# those come from broken encodings or binary data, never from a transcript.
_CONTROL_CHARS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
TEXT_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}\\ud800-\\udfff]")

UtteranceId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ID_MAX_CHARS,
        pattern=ID_PATTERN,
        description="Client id for idempotent retries.",
    ),
]


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (tab and line breaks are fine)")
    return value


def _decode_base64(value: Any) -> Any:
    if value is None or isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


Transcript = Annotated[
    Annotated[
        str,
        Field(max_length=MAX_TRANSCRIPT_CHARS, json_schema_extra={"pattern": TEXT_PATTERN}),
        AfterValidator(_no_control_chars),
    ]
    | None,
    BeforeValidator(_blank_to_none),
    Field(
        description=(
            f"What was said (blank counts as absent). At most {MAX_TRANSCRIPT_CHARS:,} characters: a longer"
            " one is refused (422). Within that cap, text beyond what the text encoder reads is cut"
            " and the answer says `transcript_truncated: true`."
        )
    ),
]
Speaker = Annotated[
    Annotated[
        str,
        Field(max_length=MAX_SPEAKER_CHARS, json_schema_extra={"pattern": TEXT_PATTERN}),
        AfterValidator(_no_control_chars),
    ]
    | None,
    BeforeValidator(_blank_to_none),
    Field(description="Who spoke; metadata only, the model never sees it."),
]
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Base64Audio = Annotated[
    bytes | None,
    BeforeValidator(_decode_base64),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "contentEncoding": "base64", "pattern": BASE64_PATTERN, "minLength": 4},
                {"type": "null"},
            ],
            "description": "An encoded audio file (standard base64, no line breaks).",
        }
    ),
]


def example_wav_base64(seconds: float = 0.25, sample_rate: int = 8000) -> str:
    """A real (tiny) WAV for the OpenAPI examples: a 220 Hz tone, 8-bit mono, base64 (~2.7 KB)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)  # unsigned 8-bit: silence is 128
        w.setframerate(sample_rate)
        phases = (2 * math.pi * 220 * i / sample_rate for i in range(int(seconds * sample_rate)))
        w.writeframes(bytes(128 + round(60 * math.sin(phase)) for phase in phases))
    return base64.b64encode(buf.getvalue()).decode()


def _one_of(transcript: str, audio: dict[str, Any]) -> list[Any]:
    """JSON Schema of "a transcript that is not blank, or audio" (the model validator's rule)."""
    return [
        {"required": [transcript], "properties": {transcript: {"type": "string", "pattern": r"\S"}}},
        {"required": [audio["name"]], "properties": {audio["name"]: audio["schema"]}},
    ]


class _UtteranceFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transcript: Transcript = None
    utterance_id: UtteranceId | None = None
    speaker: Speaker = None

    def _audio(self) -> bytes | None:
        raise NotImplementedError

    @model_validator(mode="after")
    def _one_modality(self) -> _UtteranceFields:
        audio = self._audio()
        if audio is not None and not audio:
            raise ValueError("the audio is empty (0 bytes)")
        if self.transcript is None and audio is None:
            raise ValueError("at least one of transcript and audio is required")
        return self


class UtteranceJSON(_UtteranceFields):
    """JSON body of POST /conversations/{id}/utterances."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": _one_of(
                "transcript", {"name": "audio_base64", "schema": {"type": "string", "minLength": 4}}
            ),
            "examples": [
                {"transcript": "Kids are talking by the door", "utterance_id": "turn-1", "speaker": "caller"},
                {"audio_base64": example_wav_base64(), "utterance_id": "turn-2"},
            ],
        }
    )

    audio_base64: Base64Audio = None

    def _audio(self) -> bytes | None:
        return self.audio_base64


class UtteranceForm(_UtteranceFields):
    """Multipart form of POST /conversations/{id}/utterances (the `audio` part is a file)."""

    audio: bytes | None = None

    def _audio(self) -> bytes | None:
        return self.audio


MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "audio": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "An audio file (WAV, FLAC, OGG...).",
        },
        "transcript": {
            "type": "string",
            "maxLength": MAX_TRANSCRIPT_CHARS,
            "pattern": TEXT_PATTERN,
            "description": f"What was said; at most {MAX_TRANSCRIPT_CHARS:,} characters (longer: 422).",
        },
        "utterance_id": {"type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS, "pattern": ID_PATTERN},
        "speaker": {"type": "string", "maxLength": MAX_SPEAKER_CHARS, "pattern": TEXT_PATTERN},
    },
    "anyOf": _one_of("transcript", {"name": "audio", "schema": {"type": "string", "format": "binary"}}),
    "additionalProperties": False,
    # the file part cannot be shown in an example: the docs' "Try it out" lets one pick a file
    "examples": [
        {"transcript": "Kids are talking by the door", "utterance_id": "turn-1", "speaker": "caller"}
    ],
}


def media_examples(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A schema's `examples` as an OpenAPI media type's named examples (what Swagger UI offers)."""
    named: dict[str, dict[str, Any]] = {}
    for i, value in enumerate(schema.get("examples", [])):
        name = " + ".join(k for k in ("transcript", "audio_base64") if k in value) or f"example {i}"
        named[name] = {"value": value}
    return named


class ModelRef(BaseModel):
    name: str
    version: str


class Timings(BaseModel):
    """Milliseconds per stage of the attempt that scored the utterance (a replay repeats them).

    Encode stages include time queued for a micro-batch or a free core (on CPU a request alone encodes
    its text and then its audio, each on every core: `encode_audio` then spans both); `total` ends when
    the answer is ready, just before the prediction is written to the store. The fields are
    `app.metrics.STAGES`, in order.
    """

    decode: float = 0.0
    encode_text: float = 0.0
    encode_audio: float = 0.0
    store: float = 0.0
    model: float = 0.0
    total: float = 0.0


class UtteranceResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "call-42",
                    "index": 3,
                    "utterance_id": "turn-0004",
                    "emotion": "angry",
                    "probabilities": {"angry": 0.71, "happy": 0.04, "neutral": 0.15, "sad": 0.10},
                    "modalities": ["text", "audio"],
                    "transcript_truncated": False,
                    "context_size": 4,
                    "model": {"name": "lpgnet", "version": "3f2a9c1d0b7e"},
                    "timings_ms": {
                        "decode": 2.1,
                        "encode_text": 9.8,
                        "encode_audio": 24.0,
                        "store": 0.6,
                        "model": 3.2,
                        "total": 38.5,
                    },
                }
            ]
        },
    )

    conversation_id: str
    index: int = Field(description="Position in the conversation, from 0.")
    utterance_id: str | None
    emotion: str = Field(description="The most probable label.")
    probabilities: dict[str, float] = Field(description="Label -> probability (labels of the checkpoint).")
    modalities: list[str] = Field(description="Modalities the model used for this utterance.")
    transcript_truncated: bool = Field(description="The transcript was longer than the text encoder reads.")
    context_size: int = Field(description="Utterances the model saw, this one included (<= K).")
    model: ModelRef
    timings_ms: Timings


class StoredPrediction(BaseModel):
    emotion: str
    probabilities: dict[str, float]
    context_size: int


class UtteranceView(BaseModel):
    index: int
    utterance_id: str | None
    created_at: float = Field(description="Unix time, seconds.")
    speaker: str | None
    modalities: list[str]
    transcript: str | None = Field(None, description="Only when the service keeps transcripts.")
    transcript_truncated: bool
    prediction: StoredPrediction | None = Field(description="None while the utterance is being scored.")


class ConversationResponse(BaseModel):
    conversation_id: str
    utterance_count: int = Field(description="Utterances received; GET lists the most recent ones kept.")
    created_at: float
    updated_at: float
    utterances: list[UtteranceView]


class EncoderInfo(BaseModel):
    name: str
    version: str
    dim: int
    modality: str
    sample_rate: int | None
    precision: str = Field(
        description="fp32, or int8 / bf16 / fp16 where the encoder runs reduced precision."
    )
    runtime: str = Field(
        description="What runs it: onnxruntime (the default on CPU), torch, or numpy (a feature extractor)."
    )


class ModelResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    labels: list[str]
    profile: str
    context: str = Field(description="Context mode of the checkpoint: causal or bidirectional.")
    context_window: int = Field(description="K: utterances of context per prediction.")
    modalities: list[str]
    text_only_network: bool = Field(
        description="Whether a network trained on text alone answers the utterances whose context holds no "
        "audio (a text-only client's); the fused network answers the others."
    )
    chat_text_network: bool = Field(
        description="Whether a second text network, trained mostly on written chat, stands beside the "
        "text-only one: each utterance without audio in its context is then answered by the more "
        "confident of the two over its window.",
    )
    voice_weight: float = Field(
        default=0.0,
        description="The checkpoint's voice expert: a classifier of each clip's eGeMAPS whose "
        "log-probabilities, times this weight, are added to the networks' answer on every utterance "
        "with audio (0: none).",
    )
    audio_weight: float = Field(
        description="The checkpoint's audio pool: an utterance with audio is answered by (1 - w) * logits + "
        "w * logits with the words hidden (0: as trained; `lpgnet pool-audio`)."
    )
    backend: str = Field(
        description="Runtime of LPGNet: torch or onnx (onnxruntime); when the checkpoint's networks do not "
        "all run on one, each network's in order: <fused>/<text-only>[/<chat text>] (e.g. onnx/torch)."
    )
    device: str
    torch_threads: int = Field(description="Intra-op threads of a model job while others are in flight.")
    torch_threads_alone: int = Field(
        description="Intra-op threads of a model job that is the only work in flight (adaptive_threads)."
    )
    audio_workers: int = Field(description="CPU: clips encoded at once, one per worker (0: batched).")
    encoders: dict[str, EncoderInfo]


class HealthResponse(BaseModel):
    status: str = "ok"


class ReadyResponse(BaseModel):
    status: str = "ready"
    model: ModelRef


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="Validation errors: loc, msg, type.")
