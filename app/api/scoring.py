"""One utterance, validated and scored: what POST /conversations/{id}/utterances and the WebSocket
stream both call, so the two paths cannot drift apart (validation, WAV check, idempotency, answer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.engine import Engine
from app.schemas import ModelRef, Timings, UtteranceForm, UtteranceJSON, UtteranceResponse
from app.store import ConversationKey
from app.uploads import check_wav_complete
from app.utterances import ScoredUtterance, UtteranceRequest


@dataclass(frozen=True)
class Answer:
    response: UtteranceResponse
    replayed: bool  # the stored answer of an earlier attempt with the same utterance_id


def as_request_error(exc: ValidationError) -> RequestValidationError:
    """A body's pydantic errors as the 422 the routes answer, located under `body`."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


async def validate_utterance_json(data: str | bytes | dict[str, Any]) -> UtteranceJSON:
    """The POST's JSON body rules, for raw JSON or an already parsed object (errors: 422)."""
    try:
        if isinstance(data, dict):
            # off the loop: a body near the size limit is megabytes of base64
            return await asyncio.to_thread(UtteranceJSON.model_validate, data)
        return await asyncio.to_thread(UtteranceJSON.model_validate_json, data)
    except ValidationError as exc:
        raise as_request_error(exc) from None


async def score_utterance(
    engine: Engine, key: ConversationKey, body: UtteranceJSON | UtteranceForm
) -> Answer:
    """Score a validated utterance in its conversation; raises the domain errors the POST maps."""
    audio = body.audio_base64 if isinstance(body, UtteranceJSON) else body.audio
    if audio is not None:
        check_wav_complete(audio)
    scored = await engine.submit(
        UtteranceRequest(
            key=key,
            transcript=body.transcript,
            audio=audio,
            utterance_id=body.utterance_id,
            speaker=body.speaker,
        )
    )
    return Answer(utterance_response(key, scored), scored.replayed)


def utterance_response(key: ConversationKey, scored: ScoredUtterance) -> UtteranceResponse:
    """The POST's (and the stream's) answer for a scored utterance: the one mapping of a
    `Prediction` to the response, field by field, so the stored format never leaks into it."""
    p = scored.prediction
    return UtteranceResponse(
        conversation_id=key.conversation_id,
        index=scored.index,
        utterance_id=scored.utterance_id,
        emotion=p.emotion,
        probabilities=dict(p.probabilities),
        modalities=list(p.modalities),
        transcript_truncated=p.transcript_truncated,
        context_size=p.context_size,
        model=ModelRef(name=p.model_name, version=p.model_version),
        timings_ms=Timings.model_validate(dict(p.timings_ms)),
    )
