"""A small typed client of the service: `LPGNetClient` (blocking) and `AsyncLPGNetClient` (asyncio), each
over HTTP and over the WebSocket stream. Needs only httpx, websockets and pydantic (no torch).

    from app.client import LPGNetClient

    with LPGNetClient("http://127.0.0.1:8000", api_key=None) as client:
        answer = client.post_utterance("call-42", transcript="Why is nobody answering?")
        print(answer.emotion, answer.probabilities)
        with client.stream("call-42") as stream:
            for text in ("Hello?", "Finally!"):
                print(stream.score(transcript=text).emotion)

Every error answer (HTTP or on the socket) raises `LPGNetError`, which carries the problem document.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Generic, Self, TypedDict, TypeVar, Unpack

import httpx
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from app.schemas import ConversationResponse, UtteranceResponse

AUDIO_FRAME = "audio_frame"  # app.api.routes.streams.AUDIO_FRAME (not imported: that pulls the service)

_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)
_Transport = TypeVar("_Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)
_Socket = TypeVar("_Socket", ClientConnection, AsyncConnection)


class LPGNetError(Exception):
    """An RFC 9457 problem answered by the service (`problem` is the whole document)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(f"{problem.get('status')} {problem.get('title')}: {problem.get('detail')}")
        self.problem = problem
        self.status = int(problem.get("status", 0))


@dataclass(frozen=True)
class Answer:
    """The service's answer to one utterance, and whether it replays an earlier attempt's."""

    utterance: UtteranceResponse
    replayed: bool = False

    @property
    def emotion(self) -> str:
        return self.utterance.emotion

    @property
    def probabilities(self) -> dict[str, float]:
        return self.utterance.probabilities


class UtteranceFields(TypedDict, total=False):
    """The keywords every sending method takes (`post_utterance`, `send`, `score`): an `Utterance`."""

    transcript: str | None
    audio: bytes | None
    utterance_id: str | None
    speaker: str | None


@dataclass(frozen=True)
class Utterance:
    """What the client sends: at least one of transcript and audio (an encoded file: WAV, FLAC...)."""

    transcript: str | None = None
    audio: bytes | None = None
    utterance_id: str | None = None
    speaker: str | None = None

    def fields(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("transcript", self.transcript),
                ("utterance_id", self.utterance_id),
                ("speaker", self.speaker),
            )
            if v is not None
        }

    def request(self) -> dict[str, Any]:
        """httpx keyword arguments: multipart with a file part when there is audio, JSON otherwise."""
        if self.audio is None:
            return {"json": self.fields()}
        return {
            "data": self.fields(),
            "files": {"audio": ("audio.wav", self.audio, "application/octet-stream")},
        }

    def frames(self) -> list[str | bytes]:
        """WebSocket frames: the JSON header, then the audio as one binary frame."""
        if self.audio is None:
            return [json.dumps(self.fields())]
        return [json.dumps({**self.fields(), AUDIO_FRAME: True}), self.audio]


def _answer(response: httpx.Response) -> Answer:
    _raise_for_problem(response)
    replayed = response.headers.get("idempotent-replayed") == "true"
    return Answer(UtteranceResponse.model_validate_json(response.content), replayed)


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"status": response.status_code, "title": response.reason_phrase, "detail": response.text}
    raise LPGNetError(problem)


def _stream_answer(frame: str | bytes) -> Answer:
    message = json.loads(frame)
    if message["event"] == "problem":
        raise LPGNetError(message["body"])
    return Answer(UtteranceResponse.model_validate(message["body"]), bool(message["replayed"]))


def _ws_url(base_url: str, conversation_id: str) -> str:
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/conversations/{conversation_id}/stream"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _Base(Generic[_Http, _Transport]):
    """What both clients share: the constructor, the headers and where the stream connects."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: _Transport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._http: _Http = self._open_http(
            base_url=self.base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def _open_http(self, **options: Any) -> _Http:
        raise NotImplementedError

    def _utterances_url(self, conversation_id: str) -> str:
        return f"/conversations/{conversation_id}/utterances"

    def _socket_options(self, conversation_id: str) -> dict[str, Any]:
        """Keywords of `websockets` `connect` (sync or asyncio) for this conversation's stream."""
        return {
            "uri": _ws_url(self.base_url, conversation_id),
            "additional_headers": _headers(self.api_key),
            "open_timeout": self.timeout,
        }


class _Stream(Generic[_Socket]):
    def __init__(self, socket: _Socket, timeout: float) -> None:
        self._socket: _Socket = socket
        self._timeout = timeout


# ---- blocking -------------------------------------------------------------------------------------------


class LPGNetClient(_Base[httpx.Client, httpx.BaseTransport]):
    """Blocking client; `transport` lets tests talk to an app in process (httpx.ASGITransport...)."""

    def _open_http(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        return self._http.get("/ready").status_code == 200

    def post_utterance(self, conversation_id: str, **utterance: Unpack[UtteranceFields]) -> Answer:
        request = Utterance(**utterance).request()
        return _answer(self._http.post(self._utterances_url(conversation_id), **request))

    def conversation(self, conversation_id: str) -> ConversationResponse:
        response = self._http.get(f"/conversations/{conversation_id}")
        _raise_for_problem(response)
        return ConversationResponse.model_validate_json(response.content)

    def delete_conversation(self, conversation_id: str) -> None:
        _raise_for_problem(self._http.delete(f"/conversations/{conversation_id}"))

    def stream(self, conversation_id: str) -> Stream:
        """A WebSocket stream of this conversation (use it as a context manager)."""
        return Stream(sync_connect(**self._socket_options(conversation_id)), self.timeout)


class Stream(_Stream[ClientConnection]):
    """One WebSocket stream: `send` utterances (they may be pipelined), `receive` answers in order."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def send(self, **utterance: Unpack[UtteranceFields]) -> None:
        for frame in Utterance(**utterance).frames():
            self._socket.send(frame)

    def receive(self) -> Answer:
        """The next answer in order; a problem raises `LPGNetError` (the socket stays usable)."""
        return _stream_answer(self._socket.recv(timeout=self._timeout))

    def score(self, **utterance: Unpack[UtteranceFields]) -> Answer:
        """Send one utterance and wait for its answer."""
        self.send(**utterance)
        return self.receive()


# ---- asyncio --------------------------------------------------------------------------------------------


class AsyncLPGNetClient(_Base[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The asyncio twin of `LPGNetClient` (same methods, awaited)."""

    def _open_http(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ready(self) -> bool:
        return (await self._http.get("/ready")).status_code == 200

    async def post_utterance(self, conversation_id: str, **utterance: Unpack[UtteranceFields]) -> Answer:
        request = Utterance(**utterance).request()
        return _answer(await self._http.post(self._utterances_url(conversation_id), **request))

    async def conversation(self, conversation_id: str) -> ConversationResponse:
        response = await self._http.get(f"/conversations/{conversation_id}")
        _raise_for_problem(response)
        return ConversationResponse.model_validate_json(response.content)

    async def delete_conversation(self, conversation_id: str) -> None:
        _raise_for_problem(await self._http.delete(f"/conversations/{conversation_id}"))

    async def stream(self, conversation_id: str) -> AsyncStream:
        """`async with await client.stream(id) as stream:` a WebSocket stream of this conversation."""
        return AsyncStream(await async_connect(**self._socket_options(conversation_id)), self.timeout)


class AsyncStream(_Stream[AsyncConnection]):
    """The asyncio twin of `Stream`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._socket.close()

    async def send(self, **utterance: Unpack[UtteranceFields]) -> None:
        for frame in Utterance(**utterance).frames():
            await self._socket.send(frame)

    async def receive(self) -> Answer:
        return _stream_answer(await asyncio.wait_for(self._socket.recv(), self._timeout))

    async def score(self, **utterance: Unpack[UtteranceFields]) -> Answer:
        await self.send(**utterance)
        return await self.receive()
