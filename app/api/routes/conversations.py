"""POST an utterance, GET a conversation, DELETE a conversation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.scoring import as_request_error, score_utterance, validate_utterance_json
from app.deps import EngineDep, NamespaceDep, StoreDep
from app.exceptions import ConversationNotFound, UnsupportedMediaType
from app.ids import ID_DESCRIPTION, ID_MAX_CHARS, ID_PATTERN
from app.predictions import Prediction
from app.schemas import (
    MULTIPART_SCHEMA,
    ConversationResponse,
    Problem,
    StoredPrediction,
    UtteranceForm,
    UtteranceJSON,
    UtteranceResponse,
    UtteranceView,
    media_examples,
)
from app.store import ConversationKey
from app.uploads import FormPart, InvalidForm, read_multipart, read_urlencoded

router = APIRouter(prefix="/conversations", tags=["conversations"])

ConversationId = Annotated[
    str, Path(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN, description=ID_DESCRIPTION)
]

_FORM_FIELDS = 8  # transcript, utterance_id, speaker, audio, with room for a clear "unknown field" error
_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: _PROBLEM for code in codes}


async def read_utterance(request: Request) -> UtteranceJSON | UtteranceForm:
    """Parse the body as JSON or as a form, validated by the same rules, errors as 422."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    try:
        if media_type == "application/json":
            return await validate_utterance_json(await request.body())
        if media_type == "multipart/form-data":
            parts = await read_multipart(content_type, request.stream(), max_parts=_FORM_FIELDS)
            return _form(parts)
        if media_type == "application/x-www-form-urlencoded":
            return _form(read_urlencoded(await request.body(), max_parts=_FORM_FIELDS))
    except ValidationError as exc:
        raise as_request_error(exc) from None
    except InvalidForm as exc:
        raise _form_error(exc.field, "form", exc.message) from None
    raise UnsupportedMediaType("send application/json or multipart/form-data")


def _form_error(name: str, kind: str, msg: str) -> RequestValidationError:
    loc = ("body",) if name == "body" else ("body", name)
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg}])


def _form(parts: list[FormPart]) -> UtteranceForm:
    fields: dict[str, Any] = {}
    for part in parts:
        if part.name in fields:
            raise _form_error(part.name, "duplicate", "field given more than once")
        if isinstance(part.value, bytes) != (part.name == "audio"):
            raise _form_error(part.name, "file_part", "`audio` must be a file part and nothing else may be")
        if isinstance(part.value, bytes) and not part.value and not part.filename:
            continue  # an empty file part without a name: a browser form submitted with no file chosen
        fields[part.name] = part.value
    return UtteranceForm.model_validate(fields)


@router.post(
    "/{conversation_id}/utterances",
    response_model=UtteranceResponse,
    summary="Score an utterance in the context of the conversation so far",
    description=(
        "Send audio and/or transcript of the next utterance, as JSON (`audio_base64`) or multipart "
        "(`audio` file part). The answer for index i uses only utterances 0..i. Retrying with the same "
        "`utterance_id` and content returns the first answer; other content under that id is a 409. "
        "The conversation is created by its first utterance."
    ),
    responses=_problems(401, 404, 409, 413, 415, 422, 500, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": UtteranceJSON.model_json_schema(),
                    "examples": media_examples(UtteranceJSON.model_json_schema()),
                },
                "multipart/form-data": {
                    "schema": MULTIPART_SCHEMA,
                    "examples": media_examples(MULTIPART_SCHEMA),
                },
            },
        }
    },
)
async def post_utterance(
    conversation_id: ConversationId,
    request: Request,
    response: Response,
    engine: EngineDep,
    namespace: NamespaceDep,
) -> UtteranceResponse:
    body = await read_utterance(request)
    answer = await score_utterance(engine, ConversationKey(namespace, conversation_id), body)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return answer.response


@router.get(
    "/{conversation_id}",
    response_model=ConversationResponse,
    summary="The conversation's utterances and predictions, in order (never audio)",
    responses=_problems(401, 404, 422, 500, 503),
)
async def get_conversation(
    conversation_id: ConversationId, store: StoreDep, namespace: NamespaceDep
) -> ConversationResponse:
    conversation = await store.conversation(ConversationKey(namespace, conversation_id))
    if conversation is None:
        raise ConversationNotFound(conversation_id)
    return ConversationResponse(
        conversation_id=conversation.conversation_id,
        utterance_count=conversation.utterance_count,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        utterances=[
            UtteranceView(
                index=u.index,
                utterance_id=u.meta.utterance_id,
                created_at=u.meta.created_at,
                speaker=u.meta.speaker,
                modalities=list(u.meta.modalities),
                transcript=u.meta.transcript,
                transcript_truncated=u.meta.transcript_truncated,
                prediction=None if u.prediction is None else stored_prediction(u.prediction),
            )
            for u in conversation.utterances
        ],
    )


def stored_prediction(prediction: Prediction) -> StoredPrediction:
    """What GET lists of an utterance's prediction (the POST answered more: timings, model)."""
    return StoredPrediction(
        emotion=prediction.emotion,
        probabilities=dict(prediction.probabilities),
        context_size=prediction.context_size,
    )


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase the conversation and everything stored about it",
    responses=_problems(401, 404, 422, 500, 503),
)
async def delete_conversation(
    conversation_id: ConversationId, store: StoreDep, namespace: NamespaceDep
) -> None:
    if not await store.delete(ConversationKey(namespace, conversation_id)):
        raise ConversationNotFound(conversation_id)
