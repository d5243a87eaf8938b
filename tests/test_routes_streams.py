"""WS /conversations/{id}/stream: the POST's utterances over one socket, end to end on the tiny profile.

Starlette's TestClient drives most tests in process; the ones about real connections (disconnects, two
sockets, the handshake's HTTP answer) use the `websockets` client against uvicorn on loopback.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.app_fixtures import TEST_KEY_A, TEST_KEY_B, wait_ready, wav_bytes
from tests.reliability_support import serve_in_thread


def stream_path(cid: str) -> str:
    return f"/conversations/{cid}/stream"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_problem_message(message: dict[str, Any], status: int, slug: str) -> dict[str, Any]:
    assert message["event"] == "problem", message
    body: dict[str, Any] = message["body"]
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    assert body["title"] and body["detail"] and body["request_id"]
    return body


def without_timings(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("timings_ms", "conversation_id")}


def test_stream_answers_each_utterance_in_order_with_the_posts_body(tiny_client: TestClient) -> None:
    audio1, audio2 = wav_bytes(seed=1), wav_bytes(seed=2, freq=330.0)
    with tiny_client.websocket_connect(stream_path("ws-1")) as ws:
        # all three sent before any answer is read: answers come back in order all the same
        ws.send_json({"transcript": "Why is nobody answering?", "utterance_id": "u0"})
        ws.send_json({"transcript": "Kids are talking", "audio_base64": b64(audio1), "utterance_id": "u1"})
        ws.send_json({"audio_frame": True, "utterance_id": "u2", "speaker": "caller"})
        ws.send_bytes(audio2)
        answers = [ws.receive_json() for _ in range(3)]
    assert [a["event"] for a in answers] == ["answer"] * 3
    assert [a["seq"] for a in answers] == [0, 1, 2]
    assert [a["replayed"] for a in answers] == [False] * 3
    bodies = [a["body"] for a in answers]
    assert [b["index"] for b in bodies] == [0, 1, 2]
    assert [b["utterance_id"] for b in bodies] == ["u0", "u1", "u2"]
    assert [b["modalities"] for b in bodies] == [["text"], ["text", "audio"], ["audio"]]
    # the same utterances POSTed to another conversation: the same answers, but for timings
    url = "/conversations/http-1/utterances"
    posted = [
        tiny_client.post(url, json={"transcript": "Why is nobody answering?", "utterance_id": "u0"}),
        tiny_client.post(
            url, json={"transcript": "Kids are talking", "audio_base64": b64(audio1), "utterance_id": "u1"}
        ),
        tiny_client.post(
            url,
            data={"utterance_id": "u2", "speaker": "caller"},
            files={"audio": ("a.wav", audio2, "audio/wav")},
        ),
    ]
    for over_socket, over_http in zip(bodies, posted, strict=True):
        assert over_http.status_code == 200, over_http.text
        expected = without_timings(over_http.json())
        assert set(over_socket) == set(over_http.json())
        assert without_timings(over_socket) == {
            **expected,
            "probabilities": pytest.approx(expected["probabilities"]),
        }
    stored = tiny_client.get("/conversations/ws-1").json()
    assert [u["utterance_id"] for u in stored["utterances"]] == ["u0", "u1", "u2"]


def test_stream_retry_replays_and_a_conflict_is_a_problem_on_an_open_socket(tiny_client: TestClient) -> None:
    with tiny_client.websocket_connect(stream_path("ws-idem")) as ws:
        ws.send_json({"transcript": "first", "utterance_id": "t1"})
        first = ws.receive_json()
        ws.send_json({"transcript": "first", "utterance_id": "t1"})
        again = ws.receive_json()
        ws.send_json({"transcript": "something else", "utterance_id": "t1"})
        conflict = ws.receive_json()
        ws.send_json({"transcript": "second"})
        second = ws.receive_json()
    assert again["replayed"] is True and again["body"] == first["body"]
    assert_problem_message(conflict, 409, "utterance-conflict")
    assert conflict["seq"] == 2
    assert second["event"] == "answer" and second["body"]["index"] == 1
    assert tiny_client.get("/conversations/ws-idem").json()["utterance_count"] == 2


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"transcript": "  "}),
        json.dumps({"transcript": "hi", "unknown": 1}),
        json.dumps({"audio_base64": "!!!!"}),
        json.dumps({"transcript": "hi", "audio_frame": "yes"}),
        json.dumps({"utterance_id": "bad id", "transcript": "hi"}),
    ],
)
def test_invalid_utterance_is_a_422_problem_and_stores_nothing(tiny_client: TestClient, frame: str) -> None:
    with tiny_client.websocket_connect(stream_path("ws-bad")) as ws:
        ws.send_text(frame)
        problem = assert_problem_message(ws.receive_json(), 422, "validation-error")
        assert problem["errors"] and all(e["loc"][0] == "body" for e in problem["errors"])
        assert "!!!!" not in json.dumps(problem)  # never echoes the payload
        ws.send_json({"transcript": "valid"})
        assert ws.receive_json()["body"]["index"] == 0  # the refused one took no index


def test_stream_applies_the_posts_size_and_duration_limits(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    limit = 64 * 1024
    client = start_client(make_settings(max_request_bytes=limit, max_audio_seconds=1.0))
    with client.websocket_connect(stream_path("ws-limits")) as ws:
        ws.send_json({"audio_base64": b64(b"\0" * limit)})
        assert_problem_message(ws.receive_json(), 413, "request-too-large")
        ws.send_json({"audio_frame": True, "transcript": "x" * 1000})  # header and frame count together
        ws.send_bytes(b"\0" * (limit - 500))
        assert_problem_message(ws.receive_json(), 413, "request-too-large")
        ws.send_json({"audio_frame": True})
        ws.send_bytes(wav_bytes(seconds=1.5, sample_rate=8000))
        assert_problem_message(ws.receive_json(), 413, "audio-too-long")
        ws.send_json({"audio_frame": True})
        ws.send_bytes(b"this is no audio file at all")
        assert_problem_message(ws.receive_json(), 415, "undecodable-audio")
    assert client.get("/conversations/ws-limits").status_code == 404


def test_handshake_needs_a_valid_key_and_each_key_has_its_own_conversations(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(api_keys=[TEST_KEY_A, TEST_KEY_B]))
    for headers in ({}, {"Authorization": "Bearer not-a-configured-key-123"}, {"Authorization": TEST_KEY_A}):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(stream_path("ws-auth"), headers=headers),
        ):
            pass
        response = refused.value
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"].endswith("/unauthorized")
    with client.websocket_connect(
        stream_path("ws-auth"), headers={"Authorization": f"Bearer {TEST_KEY_A}"}
    ) as ws:
        ws.send_json({"transcript": "mine"})
        assert ws.receive_json()["event"] == "answer"
    assert (
        client.get("/conversations/ws-auth", headers={"Authorization": f"Bearer {TEST_KEY_A}"}).status_code
        == 200
    )
    assert (
        client.get("/conversations/ws-auth", headers={"Authorization": f"Bearer {TEST_KEY_B}"}).status_code
        == 404
    )


def test_invalid_conversation_id_refuses_the_handshake_with_422(tiny_client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        tiny_client.websocket_connect(stream_path("bad*id")),
    ):
        pass
    assert refused.value.status_code == 422
    assert refused.value.json()["errors"][0]["loc"] == ["path", "conversation_id"]


def test_broken_framing_closes_1003_after_answering_what_came_before(tiny_client: TestClient) -> None:
    with tiny_client.websocket_connect(stream_path("ws-frames")) as ws:
        ws.send_json({"transcript": "fine"})
        ws.send_json({"audio_frame": True, "transcript": "its audio never comes"})
        ws.send_json({"transcript": "a text frame where audio was announced"})
        assert ws.receive_json()["body"]["index"] == 0
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1003
    with tiny_client.websocket_connect(stream_path("ws-frames")) as ws:
        ws.send_bytes(wav_bytes())  # audio nobody announced
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1003
    assert tiny_client.get("/conversations/ws-frames").json()["utterance_count"] == 1


def test_disconnect_between_header_and_audio_stores_nothing(tiny_client: TestClient) -> None:
    with tiny_client.websocket_connect(stream_path("ws-half")) as ws:
        ws.send_json({"audio_frame": True, "transcript": "cut off", "utterance_id": "h1"})
    assert tiny_client.get("/conversations/ws-half").status_code == 404


class _CountingReads:
    """ASGI wrapper counting the frames the app has taken from the socket."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reads = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive":
                self.reads += 1
            return message

        await self.app(scope, counted if scope["type"] == "websocket" else receive, send)


def _hold_scoring(app: Any) -> threading.Event:
    """Make every utterance wait (off the test thread) until the returned event is set."""
    import asyncio

    engine = app.state.services.engine
    original = engine.submit
    released = threading.Event()

    async def held(request: Any) -> Any:
        while not released.is_set():
            await asyncio.sleep(0.01)
        return await original(request)

    engine.submit = held
    return released


def test_a_slow_stream_stops_reading_the_socket_at_its_queue_bound(make_settings: Callable[..., Any]) -> None:
    from app.main import create_app

    app = create_app(make_settings(stream_queue=2))
    counted = _CountingReads(app)
    with TestClient(counted) as client:
        wait_ready(client)
        released = _hold_scoring(app)
        with client.websocket_connect(stream_path("ws-slow")) as ws:
            for i in range(12):
                ws.send_json({"transcript": f"utterance {i}"})
            time.sleep(0.5)
            # one being scored, two queued, one read and waiting for room: the other 8 stay unread
            assert counted.reads <= 4
            released.set()
            answers = [ws.receive_json() for _ in range(12)]
        assert [a["body"]["index"] for a in answers] == list(range(12))
        assert counted.reads == 12


# ---- real connections: uvicorn on loopback, the `websockets` client -----------------------------------


@pytest.fixture
def live_app(make_settings: Callable[..., Any]) -> Iterator[tuple[Any, str]]:
    from app.main import create_app

    app = create_app(make_settings())
    with serve_in_thread(app) as url:
        yield app, url


def ws_url(url: str, cid: str) -> str:
    return url.replace("http://", "ws://") + stream_path(cid)


def test_disconnect_mid_utterance_finishes_it_whole_and_drops_what_was_read_ahead(
    live_app: tuple[Any, str],
) -> None:
    app, url = live_app
    released = _hold_scoring(app)
    with connect(ws_url(url, "ws-gone")) as ws:
        for i in range(3):
            ws.send(json.dumps({"transcript": f"utterance {i}", "utterance_id": f"g{i}"}))
        time.sleep(0.3)  # g0 is being scored, g1 and g2 wait in the queue
    threading.Timer(0.2, released.set).start()  # the client has gone when scoring resumes

    def stored() -> list[dict[str, Any]]:
        r = httpx.get(f"{url}/conversations/ws-gone")
        return r.json()["utterances"] if r.status_code == 200 else []

    deadline = time.monotonic() + 10
    while not (stored() and stored()[0]["prediction"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    utterances = stored()
    assert [u["utterance_id"] for u in utterances] == ["g0"]
    assert utterances[0]["prediction"] is not None  # stored whole, never half
    retry = httpx.post(
        f"{url}/conversations/ws-gone/utterances", json={"transcript": "utterance 0", "utterance_id": "g0"}
    )
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"


def test_two_sockets_on_one_conversation_share_one_order(live_app: tuple[Any, str]) -> None:
    _, url = live_app
    indices: dict[str, list[int]] = {}

    def talk(name: str) -> None:
        with connect(ws_url(url, "ws-shared")) as ws:
            for i in range(5):
                ws.send(json.dumps({"transcript": f"{name} says {i}", "utterance_id": f"{name}-{i}"}))
            answers = [json.loads(ws.recv(timeout=30)) for _ in range(5)]
        indices[name] = [a["body"]["index"] for a in answers]

    threads = [threading.Thread(target=talk, args=(name,)) for name in ("agent", "caller")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(indices["agent"] + indices["caller"]) == list(range(10))
    assert all(seq == sorted(seq) for seq in indices.values())  # each socket's answers in its own order
    conversation = httpx.get(f"{url}/conversations/ws-shared").json()
    assert conversation["utterance_count"] == 10
    assert all(u["prediction"] is not None for u in conversation["utterances"])


def test_real_handshake_refusal_is_an_http_problem(make_settings: Callable[..., Any]) -> None:
    from app.main import create_app

    with serve_in_thread(create_app(make_settings(api_keys=[TEST_KEY_A]))) as url:
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(url, "ws-key")):
            pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["type"].endswith("/unauthorized")
        with connect(
            ws_url(url, "ws-key"), additional_headers={"Authorization": f"Bearer {TEST_KEY_A}"}
        ) as ws:
            ws.send(json.dumps({"transcript": "let me in"}))
            assert json.loads(ws.recv(timeout=30))["event"] == "answer"
