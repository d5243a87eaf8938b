"""GET /health, /ready, /metrics, /model; error envelope for 404/405/500; request ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.engine import Engine
from app.main import create_app
from app.metrics import CONVERSATION_GAUGES, Metrics
from model.checkpoint import load_checkpoint
from tests.app_fixtures import wait_ready
from tests.reliability_support import assert_problem


def test_health_answers_ok(tiny_client: TestClient) -> None:
    r = tiny_client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_after_warm_up_names_the_model(tiny_client: TestClient, tiny_checkpoint: Any) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    r = tiny_client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model": {"name": ckpt.name, "version": ckpt.version}}


@pytest.mark.asyncio
async def test_ready_is_503_before_the_lifespan_has_run(make_settings: Callable[..., Any]) -> None:
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing loaded
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.get("/ready")
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert (await http.get("/health")).status_code == 200
        r = await http.post("/conversations/c/utterances", json={"transcript": "hi"})
        assert r.status_code == 503


def test_ready_is_503_until_warm_up_finishes(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = asyncio.Event()
    original = Engine.warm_up

    async def gated_warm_up(self: Engine) -> None:
        await gate.wait()
        await original(self)

    monkeypatch.setattr(Engine, "warm_up", gated_warm_up)
    client = start_client(make_settings(), ready=False)
    for _ in range(3):
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["title"] == "Service not ready"
    assert client.get("/health").status_code == 200
    client.portal.call(gate.set)  # type: ignore[union-attr]
    wait_ready(client, timeout_s=60)


def test_ready_is_503_when_the_store_is_unreachable(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(redis_url="redis://127.0.0.1:1/0"), ready=False)
    engine = client.app.state.services.engine  # type: ignore[attr-defined]
    client.portal.call(engine.warm_up)  # type: ignore[union-attr]
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["title"] == "Conversation store unavailable"
    r = client.post("/conversations/c/utterances", json={"transcript": "hi"})
    assert r.status_code == 503 and r.headers["retry-after"]


def test_model_describes_labels_encoders_and_context(tiny_client: TestClient, tiny_checkpoint: Any) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    body = tiny_client.get("/model").json()
    assert body["labels"] == ckpt.labels
    assert body["version"] == ckpt.version and body["name"] == ckpt.name
    assert body["profile"] == "tiny" and body["context"] == "causal" and body["context_window"] == 4
    assert body["modalities"] == ["audio", "text"]
    for modality, spec in ckpt.encoders.items():
        assert body["encoders"][modality]["name"] == spec.name
        assert body["encoders"][modality]["version"] == spec.version
    assert body["encoders"]["audio"]["sample_rate"] == 16_000


def test_model_says_which_runtime_and_precision_serve_each_encoder(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    """The default on CPU: onnxruntime graphs (tiny text passes int8 parity, its audio fp32 only)."""
    served = start_client(make_settings(encoder_backend="auto")).get("/model").json()["encoders"]
    assert {m: e["runtime"] for m, e in served.items()} == {"audio": "onnxruntime", "text": "onnxruntime"}
    assert all(e["precision"] in ("int8", "fp32") for e in served.values())
    torch_served = start_client(make_settings(encoder_backend="torch")).get("/model").json()["encoders"]
    assert {m: e["runtime"] for m, e in torch_served.items()} == {"audio": "torch", "text": "torch"}


def test_metrics_expose_requests_stages_batches_and_conversations(tiny_client: TestClient) -> None:
    tiny_client.post("/conversations/m1/utterances", json={"transcript": "hello"})
    text = tiny_client.get("/metrics").text
    assert (
        'lpgnet_requests_total{method="POST",route="/conversations/{conversation_id}/utterances",status="200"}'
        in text
    )
    assert 'lpgnet_stage_duration_seconds_count{stage="model"}' in text
    assert 'lpgnet_batch_size_count{batcher="text"}' in text
    assert "lpgnet_active_conversations 1.0" in text
    assert 'lpgnet_evicted_conversations{bound="conversations"} 0.0' in text
    assert 'lpgnet_evicted_conversations{bound="bytes"} 0.0' in text
    held = re.search(r"^lpgnet_store_bytes ([0-9.e+]+)$", text, re.M)
    assert held and float(held.group(1)) > 0  # the conversation just written
    assert "lpgnet_ready 1.0" in text


def test_store_evictions_are_reported_by_bound() -> None:
    metrics = Metrics()
    metrics.observe_store(evicted=5, evicted_for_bytes=2, bytes_held=12_345)
    text = metrics.render().decode()
    assert 'lpgnet_evicted_conversations{bound="conversations"} 3.0' in text
    assert 'lpgnet_evicted_conversations{bound="bytes"} 2.0' in text
    assert "lpgnet_store_bytes 12345.0" in text
    hidden = metrics.render(conversation_counts=False).decode()
    assert not any(gauge in hidden for gauge in CONVERSATION_GAUGES)


def test_unknown_path_is_404_problem(tiny_client: TestClient) -> None:
    r = tiny_client.get("/no/such/path")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/conversations/c", "DELETE, GET"),
        ("PATCH", "/conversations/c", "DELETE, GET"),
        ("GET", "/conversations/c/utterances", "POST"),
        ("PUT", "/conversations/c/utterances", "POST"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_method_is_405_problem_naming_every_allowed_method(
    tiny_client: TestClient, method: str, path: str, allowed: str
) -> None:
    r = tiny_client.request(method, path, json={"transcript": "hi"})
    assert_problem(r, 405)
    assert r.headers["allow"] == allowed


def test_internal_error_is_a_bare_500_with_the_request_id(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(self: Engine, request: Any) -> Any:
        raise RuntimeError("secret detail at /srv/private/path")

    monkeypatch.setattr(Engine, "submit", explode)
    r = tiny_client.post("/conversations/c1/utterances", json={"transcript": "hi"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "secret" not in r.text and "/srv" not in r.text
    request_id = r.headers["x-request-id"]
    assert r.json()["request_id"] == request_id
    assert any(request_id in rec.getMessage() for rec in caplog.records)


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(tiny_client: TestClient) -> None:
    for r in (tiny_client.get("/health"), tiny_client.get("/nope"), tiny_client.get("/conversations/x y")):
        assert len(r.headers["x-request-id"]) >= 16
    assert (
        tiny_client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    )
    assert (
        tiny_client.get("/health", headers={"X-Request-ID": "bad id\x7f"}).headers["x-request-id"]
        != "bad id\x7f"
    )


def test_openapi_documents_both_body_types_and_problems(tiny_client: TestClient) -> None:
    spec = tiny_client.get("/openapi.json").json()
    post = spec["paths"]["/conversations/{conversation_id}/utterances"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "application/problem+json" in post["responses"]["409"]["content"]
