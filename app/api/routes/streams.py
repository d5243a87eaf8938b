"""WS /conversations/{id}/stream: the POST's utterances over one persistent connection.

Protocol (the README has it with examples):

- Handshake: `Authorization: Bearer <key>` when the service has API keys. A refused handshake gets the
  HTTP problem the POST would get (401 key, 422 conversation id, 503 model not loaded).
- Client: a text frame holding the POST's JSON body (`transcript`, `audio_base64`, `utterance_id`,
  `speaker`); or that header with `"audio_frame": true` instead of `audio_base64`, followed by one
  binary frame with the audio file's bytes.
- Server: one text frame per utterance, in the order sent; `seq` counts the client's utterances from 0:
  `{"event": "answer", "seq": n, "replayed": false, "body": <the POST's 200 body>}` or
  `{"event": "problem", "seq": n, "body": <the POST's problem+json body>}`. A problem leaves the socket
  open. Same validation, limits (`max_request_bytes` for a header and its frame together) and
  idempotency as the POST: both call `app.api.scoring`.
- Close codes: 1000 normal; 1003 a binary frame that no header announced, or a text frame where one
  was; 1009 a frame over the server's frame limit (`lpgnet serve`: `max_request_bytes`); 1011 an
  internal error of the socket itself; 1012 the server is restarting.

Back-pressure: utterances read ahead wait in a queue of `stream_queue`; while it is full the socket is
not read, so TCP pushes back on the sender, and answers are sent one at a time. On a disconnect the
utterance being scored finishes (stored whole, with its prediction: a retry with its utterance_id gets
the answer); those only read ahead are dropped unscored, nothing of them stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param
from starlette.websockets import WebSocketDisconnect

from app.api.routes.conversations import ConversationId
from app.api.scoring import score_utterance, validate_utterance_json
from app.deps import Services, get_engine
from app.engine import Engine
from app.errors import INTERNAL, problem_body, problem_of, refuse_websocket, request_id_of
from app.exceptions import RequestTooLarge, ServiceError
from app.schemas import UtteranceJSON
from app.settings import Settings
from app.store import ConversationKey

log = logging.getLogger(__name__)

router = APIRouter(prefix="/conversations", tags=["conversations"])

AUDIO_FRAME = "audio_frame"  # header field: the utterance's audio follows as one binary frame
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INTERNAL_ERROR = 1011
_SEND_FAILED = (WebSocketDisconnect, RuntimeError, OSError)  # the client has gone


@dataclass(frozen=True)
class _Utterance:
    seq: int
    request_id: str
    body: UtteranceJSON | None  # None: `error` says why it is refused, answered in its turn
    error: Exception | None = None


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


def bearer_key(websocket: WebSocket) -> str | None:
    """The key of an `Authorization: Bearer` header, read as the HTTP routes' HTTPBearer reads it."""
    scheme, key = get_authorization_scheme_param(websocket.headers.get("authorization"))
    return key if scheme.lower() == "bearer" and key else None


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for the stream: a frame may be as large as a request body, no larger."""
    return {"ws_max_size": settings.max_request_bytes}


@router.websocket("/{conversation_id}/stream", name="stream_utterances")
async def stream_utterances(websocket: WebSocket, conversation_id: ConversationId) -> None:
    services: Services = websocket.app.state.services
    try:
        namespace = services.api_keys.namespace_for(bearer_key(websocket))
        engine = await get_engine(services)
    except ServiceError as exc:
        await refuse_websocket(websocket, exc)
        return
    await websocket.accept()
    key = ConversationKey(namespace, conversation_id)
    await UtteranceStream(websocket, engine, key, services.settings).run()


class UtteranceStream:
    """One socket: a reader that validates frames into a bounded queue, an answerer that scores them
    one at a time, in order, and sends each answer before taking the next."""

    def __init__(
        self, websocket: WebSocket, engine: Engine, key: ConversationKey, settings: Settings
    ) -> None:
        self.websocket = websocket
        self.engine = engine
        self.key = key
        self.max_bytes = settings.max_request_bytes
        self.queue: asyncio.Queue[_Utterance | _Close | None] = asyncio.Queue(maxsize=settings.stream_queue)
        self.connection_id = request_id_of(websocket) or uuid.uuid4().hex
        self.client_gone = False

    async def run(self) -> None:
        answering = asyncio.create_task(self._answer_all(), name=f"lpgnet-stream-{self.connection_id}")
        try:
            try:
                end = await self._read_all()
            except Exception:
                log.exception("stream reader failed [request_id=%s]", self.connection_id)
                end = _Close(CLOSE_INTERNAL_ERROR, "internal error")
            if end is None:  # the client left: what was only read ahead is dropped unscored
                self.client_gone = True
                while not self.queue.empty():
                    self.queue.get_nowait()
            await self.queue.put(end)
            await answering
        finally:
            answering.cancel()  # only ever pending here when this task is cancelled (shutdown)

    # ---- reading ---------------------------------------------------------------------------------------

    async def _read_all(self) -> _Close | None:
        """Read utterances until the client leaves (None) or breaks the framing (a close to send)."""
        seq = 0
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                return _Close(
                    CLOSE_UNSUPPORTED_DATA, f'binary frame without a header with "{AUDIO_FRAME}": true'
                )
            utterance = await self._read_utterance(seq, text)
            if not isinstance(utterance, _Utterance):
                return utterance
            await self.queue.put(utterance)  # blocks while full: the socket is not read meanwhile
            seq += 1

    async def _read_utterance(self, seq: int, text: str) -> _Utterance | _Close | None:
        """One utterance: a JSON text frame, plus the binary frame it announces. Invalid content is an
        `_Utterance` with its error (a problem answered in order); broken framing is a `_Close`."""
        request_id = f"{self.connection_id}:{seq}"
        size = len(text.encode("utf-8"))
        header: Any = None
        with contextlib.suppress(ValueError):  # not JSON: the validator below says so as the POST does
            header = await asyncio.to_thread(json.loads, text)
        announced = isinstance(header, dict) and AUDIO_FRAME in header
        if announced:
            assert isinstance(header, dict)
            flag = header.pop(AUDIO_FRAME)
            frame = await self.websocket.receive() if flag is True else None
            if frame is not None:
                if frame["type"] == "websocket.disconnect":
                    return None  # header without its audio: nothing is stored
                if frame.get("bytes") is None:
                    return _Close(CLOSE_UNSUPPORTED_DATA, "a binary audio frame was announced, text came")
                audio: bytes = frame["bytes"]
                size += len(audio)
                if "audio_base64" in header:
                    return _Utterance(
                        seq, request_id, None, _frame_error("send audio_base64 or an audio frame")
                    )
                header["audio_base64"] = audio
            elif flag is not False:
                return _Utterance(seq, request_id, None, _frame_error("must be true or false"))
        if size > self.max_bytes:
            return _Utterance(seq, request_id, None, RequestTooLarge(self.max_bytes))
        try:
            body = await validate_utterance_json(header if announced else text)
        except RequestValidationError as exc:
            return _Utterance(seq, request_id, None, exc)
        return _Utterance(seq, request_id, body)

    # ---- answering -------------------------------------------------------------------------------------

    async def _answer_all(self) -> None:
        """Take utterances in order until the reader's end marker; never stops early, so the reader is
        never left blocked on a full queue."""
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, _Close):
                if not self.client_gone:
                    with contextlib.suppress(*_SEND_FAILED):
                        await self.websocket.close(item.code, item.reason)
                return
            if self.client_gone:
                continue  # read ahead before the client left: dropped, never stored
            message = await self._answer(item)
            if self.client_gone:
                continue
            try:
                await self.websocket.send_text(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
            except _SEND_FAILED:
                self.client_gone = True

    async def _answer(self, item: _Utterance) -> dict[str, Any]:
        try:
            if item.error is not None:
                raise item.error
            assert item.body is not None
            # shielded: if this socket's task is cancelled (shutdown), the utterance is still stored whole
            answer = await asyncio.shield(score_utterance(self.engine, self.key, item.body))
        except Exception as exc:
            kind, detail, extra = problem_of(exc)
            if kind is INTERNAL:
                log.exception("unhandled error [request_id=%s] stream utterance", item.request_id)
            problem = problem_body(
                kind, detail, instance=self.websocket.url.path, request_id=item.request_id, **extra
            )
            return {"event": "problem", "seq": item.seq, "body": problem}
        body = answer.response.model_dump(mode="json")
        return {"event": "answer", "seq": item.seq, "replayed": answer.replayed, "body": body}


def _frame_error(msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", AUDIO_FRAME), "msg": msg}])
