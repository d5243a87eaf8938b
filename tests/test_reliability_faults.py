"""Faults: Redis crashing or hanging under the service, the model or an encoder raising, and a graceful
shutdown of a real server. The service answers 503/500 problem+json meanwhile, writes nothing half,
keeps serving, and recovers by itself; no acknowledged utterance is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.app_fixtures import wav_bytes
from tests.reliability_support import (
    HOLD_MARKER,
    SLOW_MARKER,
    RedisServer,
    ServerProcess,
    assert_problem,
    server_env,
    wait_for,
)

URL = "/conversations/{cid}/utterances"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (appendonly, fsync always), stopped afterwards."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()


def post_text(client: TestClient, cid: str, text: str, uid: str | None = None) -> Any:
    body = {"transcript": text} | ({"utterance_id": uid} if uid else {})
    return client.post(URL.format(cid=cid), json=body)


# ---- Redis ------------------------------------------------------------------------------------------


def test_redis_crash_gives_503_and_after_its_restart_every_acknowledged_utterance_is_back(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient], private_redis: RedisServer
) -> None:
    client = start_client(make_settings(redis_url=private_redis.url, context_window=4))
    acknowledged: dict[str, list[dict[str, Any]]] = {"call-a": [], "call-b": []}
    for i in range(6):
        for cid, answers in acknowledged.items():
            r = post_text(client, cid, f"{cid} turn {i}", uid=f"t{i}")
            assert r.status_code == 200, r.text
            answers.append(r.json())
    run_id = private_redis.run_id()

    private_redis.kill()  # SIGKILL: a crash, not a polite shutdown
    started = time.monotonic()
    assert_problem(post_text(client, "call-a", "lost in the outage", uid="t6"), 503, slug="store-unavailable")
    assert time.monotonic() - started < 10  # refused promptly, not after a hang
    r = post_text(client, "call-new", "hello")
    assert_problem(r, 503, slug="store-unavailable")
    assert r.headers["retry-after"]
    assert_problem(client.get("/conversations/call-a"), 503, slug="store-unavailable")
    assert_problem(client.delete("/conversations/call-b"), 503, slug="store-unavailable")
    assert_problem(client.get("/ready"), 503, slug="store-unavailable")
    assert client.get("/health").status_code == 200  # alive: the orchestrator must not kill it
    assert client.get("/metrics").status_code == 200

    # "back" = the same data reloaded by a new Redis process (not an empty one on the same port)
    private_redis.start()
    assert private_redis.run_id() != run_id
    wait_for(lambda: client.get("/ready").status_code == 200, 15, "the service to report ready again")

    for cid, answers in acknowledged.items():
        conversation = client.get(f"/conversations/{cid}").json()
        assert conversation["utterance_count"] == len(answers)  # nothing from the outage, nothing lost
        assert [u["utterance_id"] for u in conversation["utterances"]] == [a["utterance_id"] for a in answers]
        for stored, answer in zip(conversation["utterances"], answers, strict=True):
            assert stored["prediction"]["probabilities"] == answer["probabilities"]
    assert_problem(client.get("/conversations/call-new"), 404)
    # the conversations go on where they were: the counters came back too
    r = post_text(client, "call-a", "lost in the outage", uid="t6")
    assert r.status_code == 200 and r.json()["index"] == 6 and r.json()["context_size"] == 4
    retry = post_text(client, "call-b", "call-b turn 5", uid="t5")
    assert retry.json() == acknowledged["call-b"][5]  # idempotency survived the crash


def test_redis_hanging_times_out_as_503_and_the_service_recovers_when_it_resumes(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient], private_redis: RedisServer
) -> None:
    client = start_client(make_settings(redis_url=private_redis.url))
    assert post_text(client, "c", "before", uid="u0").status_code == 200
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # alive but silent: a blocked or swapping Redis
    try:
        started = time.monotonic()
        assert_problem(client.get("/conversations/c"), 503, slug="store-unavailable")
        assert (
            time.monotonic() - started < 10
        )  # the store's timeout (2 s, more on a busy machine), not forever
        assert_problem(client.get("/ready"), 503)
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    wait_for(lambda: client.get("/ready").status_code == 200, 15, "ready after Redis resumes")
    conversation = client.get("/conversations/c").json()
    assert conversation["utterance_count"] == 1
    assert post_text(client, "c", "after", uid="u1").json()["index"] == 1


def test_store_failure_after_the_append_is_a_503_and_the_retry_scores_it_exactly_once(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis can fail between storing an utterance and storing its answer. The client gets a 503 and
    retries with its utterance_id; the retry scores the stored utterance once, and nothing is doubled."""
    from app.exceptions import StoreUnavailable
    from app.store import MemoryStore

    client = start_client(make_settings())
    assert post_text(client, "c", "first", uid="u0").status_code == 200
    original = MemoryStore.set_prediction
    failures = iter([True])

    async def flaky(self: MemoryStore, *args: Any) -> bool:
        if next(failures, False):
            raise StoreUnavailable("the conversation store is unavailable")
        return await original(self, *args)

    monkeypatch.setattr(MemoryStore, "set_prediction", flaky)
    assert_problem(post_text(client, "c", "second", uid="u1"), 503)
    started = time.monotonic()
    retry = post_text(client, "c", "second", uid="u1")
    assert retry.status_code == 200 and retry.json()["index"] == 1
    assert time.monotonic() - started < 1.5  # scored at once: no wait for an answer that will not come
    again = post_text(client, "c", "second", uid="u1")
    assert again.json() == retry.json() and again.headers["idempotent-replayed"] == "true"
    conversation = client.get("/conversations/c").json()
    assert conversation["utterance_count"] == 2
    assert all(u["prediction"] is not None for u in conversation["utterances"])


# ---- the model and the encoders ------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


SECRET_FAILURE = "CUDA error at /srv/secret/lpgnet/model.py:42 tensor(0.1234)"


@pytest.mark.parametrize("part", ["text-encoder", "audio-encoder", "network"])
def test_an_exception_in_the_model_or_an_encoder_is_a_bare_500_and_the_service_keeps_serving(
    tiny_client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    part: str,
) -> None:
    engine = tiny_client.app.state.services.engine  # type: ignore[attr-defined]
    target = {
        "text-encoder": engine.encoders["text"],
        "audio-encoder": engine.encoders["audio"],
        "network": engine.workers,
    }[part]
    # the engine calls encode_with_info where a text encoder has it, encode_batch otherwise; the
    # network is whichever runtime serves it (PyTorch or onnxruntime), behind ModelWorkers.network
    methods = {"text-encoder": "encode_with_info", "audio-encoder": "encode_batch", "network": "network"}
    method = methods[part]
    failing = threading.Event()
    original = getattr(target, method)

    def sometimes_boom(*args: Any, **kwargs: Any) -> Any:
        if failing.is_set():
            raise Boom(SECRET_FAILURE)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, method, sometimes_boom)

    def post(i: int) -> Any:
        return tiny_client.post(
            URL.format(cid="c"),
            data={"transcript": f"turn {i}"},
            files={"audio": ("a.wav", wav_bytes(0.3, seed=i), "audio/wav")},
        )

    assert post(0).status_code == 200
    failing.set()
    caplog.set_level(logging.ERROR)
    r = post(1)
    body = assert_problem(r, 500, slug="internal")
    assert body["detail"] == "internal error"
    for leak in ("secret", "/srv", "CUDA", "tensor", "Boom"):
        assert leak not in r.text
    logged = [rec for rec in caplog.records if r.headers["x-request-id"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is Boom
    failing.clear()
    after = post(2)  # the batchers and the process live on
    assert after.status_code == 200, after.text
    conversation = tiny_client.get("/conversations/c").json()
    if part == "network":  # it failed after the append: the utterance is kept, unanswered
        assert [u["prediction"] is None for u in conversation["utterances"]] == [False, True, False]
    else:  # it failed before anything was stored
        assert conversation["utterance_count"] == 2 and after.json()["index"] == 1


# ---- graceful shutdown of a real server ---------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    server = ServerProcess(server_env(make_settings()), tmp_path / "server.log", slow_s=5.0)
    try:
        server.wait_ready()
        result: dict[str, Any] = {}

        def slow_request() -> None:
            try:
                result["response"] = httpx.post(
                    server.url + URL.format(cid="c"), json={"transcript": f"{SLOW_MARKER} hello"}, timeout=30
                )
            except httpx.HTTPError as exc:  # pragma: no cover - reported by the assertion below
                result["error"] = exc

        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        wait_for(lambda: "slow request started" in server.log(), 30, "the request to reach the encoder")
        server.terminate()

        def refused() -> bool:
            try:
                httpx.get(server.url + "/health", timeout=1)
            except httpx.ConnectError:
                return True
            return False

        wait_for(refused, 4, "new connections to be refused")
        assert in_flight.is_alive(), "the in-flight request ended before the server stopped listening"
        in_flight.join(30)
        assert "error" not in result, result
        response = result["response"]
        assert response.status_code == 200, response.text
        assert response.json()["index"] == 0
        # uvicorn re-raises the signal it handled once it has shut down cleanly
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        log = server.log()
        assert "Traceback" not in log, log
        assert "Shutting down" in log and "Application shutdown complete" in log, log
    finally:
        server.close()


@pytest.mark.asyncio
async def test_an_input_that_crashes_an_encoder_fails_alone_not_its_whole_batch(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent requests share an encoder batch; one poisonous item must not take the others down."""
    import asyncio

    from app.main import create_app
    from tests.reliability_support import asgi_client

    application = create_app(make_settings(batch_max_wait_ms=50, batch_max_size=16))
    async with asgi_client(application) as client:
        encoder = application.state.services.engine.encoders["text"]
        original = encoder.encode_with_info
        batch_sizes: list[int] = []

        def poisoned(texts: list[str]) -> Any:
            batch_sizes.append(len(texts))
            if any("poison" in t for t in texts):
                raise Boom(SECRET_FAILURE)
            return original(texts)

        monkeypatch.setattr(encoder, "encode_with_info", poisoned)
        texts = [f"turn {i}" for i in range(7)] + ["poison pill"]
        responses = await asyncio.gather(
            *(client.post(URL.format(cid=f"c{i}"), json={"transcript": t}) for i, t in enumerate(texts))
        )
        assert max(batch_sizes) > 1  # they did share a batch
        assert [r.status_code for r in responses] == [200] * 7 + [500]
        assert_problem(responses[-1], 500, slug="internal")


# ---- Redis restarts under a real server process -------------------------------------------------------


def post_burst(url: str, cid: str, n: int, *, tag: str) -> list[httpx.Response]:
    """n posts at once to one conversation of a real server, each with its own utterance_id."""
    import asyncio

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        URL.format(cid=cid), json={"transcript": f"{tag} {i}", "utterance_id": f"{tag}-{i}"}
                    )
                    for i in range(n)
                )
            )

    return asyncio.run(burst())


@pytest.fixture(scope="module")
def redis_and_server(
    make_settings: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisServer, ServerProcess]]:
    """A private redis-server and a real server process on it, shared by the tests that crash Redis."""
    directory = tmp_path_factory.mktemp("redis-crash")
    redis = RedisServer(directory)
    redis.start()
    settings = make_settings(redis_url=redis.url)
    server = ServerProcess(server_env(settings), directory / "server.log")
    try:
        server.wait_ready()
        yield redis, server
    finally:
        server.close()
        redis.stop()


def test_once_ready_after_a_redis_restart_no_request_fails_on_a_stale_pooled_connection(
    redis_and_server: tuple[RedisServer, ServerProcess],
) -> None:
    """Connections pooled before a Redis crash are dead after its restart; each is detected and replaced
    (or the idempotent step retried on a fresh one), so no request after /ready says 200 is a 503."""
    private_redis, server = redis_and_server
    before = post_burst(server.url, "c", 12, tag="before")  # fills the pool with ~12 connections
    assert [r.status_code for r in before] == [200] * 12
    private_redis.kill()
    private_redis.start()
    wait_for(lambda: httpx.get(server.url + "/ready").status_code == 200, 15, "ready again")
    probes = [httpx.get(server.url + "/ready").status_code for _ in range(5)]
    after = post_burst(server.url, "c", 12, tag="after")
    again = post_burst(server.url, "c", 12, tag="again")
    assert probes == [200] * 5, probes  # /ready does not flap
    assert [r.status_code for r in after + again] == [200] * 24, [r.text for r in after + again]
    conversation = httpx.get(server.url + "/conversations/c").json()
    # each once: a retry on a fresh connection doubled nothing
    assert conversation["utterance_count"] == 36


def test_a_503_after_the_append_is_completed_by_the_retry_once_redis_is_back(
    redis_and_server: tuple[RedisServer, ServerProcess],
) -> None:
    """Redis dies between storing an utterance and storing its answer: the client gets a 503, and its
    retry with the same utterance_id (once /ready is 200) is scored at once, not a 409 for 30 s."""
    private_redis, server = redis_and_server
    body = {"transcript": "where is my parcel", "utterance_id": f"{HOLD_MARKER}-1"}
    assert httpx.post(server.url + URL.format(cid="held"), json={"transcript": "hello"}).status_code == 200
    result: dict[str, httpx.Response] = {}
    first = threading.Thread(
        target=lambda: result.update(r=httpx.post(server.url + URL.format(cid="held"), json=body, timeout=30))
    )
    first.start()
    wait_for(lambda: "scoring held" in server.log(), 30, "the utterance to be stored and held")
    private_redis.kill()
    first.join(30)
    assert_problem(result["r"], 503, slug="store-unavailable")
    private_redis.start()
    wait_for(lambda: httpx.get(server.url + "/ready").status_code == 200, 15, "ready again")
    started = time.monotonic()
    retry = httpx.post(server.url + URL.format(cid="held"), json=body, timeout=30)
    assert retry.status_code == 200, retry.text
    assert time.monotonic() - started < 5
    assert retry.json()["index"] == 1 and retry.json()["context_size"] == 2
    again = httpx.post(server.url + URL.format(cid="held"), json=body, timeout=30)
    assert again.json() == retry.json() and again.headers["idempotent-replayed"] == "true"
    conversation = httpx.get(server.url + "/conversations/held").json()
    assert conversation["utterance_count"] == 2
    assert conversation["utterances"][1]["prediction"]["probabilities"] == retry.json()["probabilities"]


@pytest.mark.slow
def test_past_the_shutdown_grace_a_request_in_flight_gets_a_503_problem_and_ready_turned_503_first(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(shutdown_drain_s=1.0, shutdown_grace_s=1.0)
    server = ServerProcess(server_env(settings), tmp_path / "server.log", slow_s=5.0)
    try:
        server.wait_ready()
        result: dict[str, Any] = {}

        def slow_request() -> None:
            result["response"] = httpx.post(
                server.url + URL.format(cid="c"),
                json={"transcript": f"{SLOW_MARKER} hello", "utterance_id": "u1"},
                headers={"X-Request-ID": "slow-one"},
                timeout=30,
            )

        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        wait_for(lambda: "slow request started" in server.log(), 30, "the request to reach the encoder")
        signalled = time.monotonic()
        server.terminate()
        # first: not ready, while the port still answers (load balancers take the replica out)
        wait_for(lambda: httpx.get(server.url + "/ready").status_code == 503, 0.9, "/ready to turn 503")
        assert_problem(httpx.get(server.url + "/ready"), 503, slug="shutting-down")
        assert httpx.get(server.url + "/health").status_code == 200
        in_flight.join(30)
        waited = time.monotonic() - signalled
        body = assert_problem(result["response"], 503, slug="shutting-down")
        assert body["request_id"] == "slow-one" and result["response"].headers["retry-after"]
        assert 1.5 < waited < 4.5, waited  # drain + grace, not the 5 s the request would have taken
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.close()
