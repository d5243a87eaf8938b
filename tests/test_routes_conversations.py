"""POST /conversations/{id}/utterances, GET and DELETE /conversations/{id}, end to end on the tiny profile.

Malformed bodies, audio and ids sent to these routes are the table of tests/test_reliability_bad_input.py;
one key reaching another's conversation is tests/test_reliability_security.py.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.metrics import STAGES
from model.checkpoint import load_checkpoint
from tests.app_fixtures import TEST_KEY_A, Clip, wav_bytes


def post(client: TestClient, cid: str, **fields: Any) -> Any:
    """Multipart POST: `audio` bytes become a file part, the rest form fields."""
    audio = fields.pop("audio", None)
    files = {"audio": ("clip.wav", audio, "audio/wav")} if audio is not None else None
    return client.post(f"/conversations/{cid}/utterances", data=fields, files=files)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert "detail" in body
    assert response.headers["x-request-id"]
    return body


def test_conversation_of_eight_ravdess_clips_is_scored_in_order(
    tiny_client: TestClient, ravdess_clips: list[Clip], tiny_checkpoint: Any
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    for i, clip in enumerate(ravdess_clips):
        r = post(
            tiny_client, "ravdess-01", audio=clip.data, transcript=clip.transcript, utterance_id=f"turn-{i}"
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["conversation_id"] == "ravdess-01"
        assert body["index"] == i
        assert body["utterance_id"] == f"turn-{i}"
        assert list(body["probabilities"]) == ckpt.labels
        assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-6)
        assert body["emotion"] == max(body["probabilities"], key=body["probabilities"].get)
        assert body["modalities"] == ["text", "audio"]
        assert body["transcript_truncated"] is False
        assert body["context_size"] == min(i + 1, 4)  # K = 4 in these settings
        assert body["model"] == {"name": ckpt.name, "version": ckpt.version}
        assert set(body["timings_ms"]) == set(STAGES)
        assert body["timings_ms"]["total"] >= body["timings_ms"]["model"] > 0
    conversation = tiny_client.get("/conversations/ravdess-01").json()
    assert [u["index"] for u in conversation["utterances"]] == list(range(8))
    assert all(u["prediction"] is not None for u in conversation["utterances"])


def test_text_only_utterance_as_json(tiny_client: TestClient) -> None:
    r = tiny_client.post(
        "/conversations/c1/utterances", json={"transcript": "I am so happy today", "speaker": "agent"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["modalities"] == ["text"]
    assert r.json()["timings_ms"]["encode_audio"] == 0


def test_audio_only_utterance_as_base64_json(tiny_client: TestClient, ravdess_clips: list[Clip]) -> None:
    audio = base64.b64encode(ravdess_clips[0].data).decode()
    r = tiny_client.post("/conversations/c1/utterances", json={"audio_base64": audio})
    assert r.status_code == 200, r.text
    assert r.json()["modalities"] == ["audio"]
    assert r.json()["timings_ms"]["decode"] > 0


def test_audio_only_utterance_as_multipart(tiny_client: TestClient) -> None:
    r = post(tiny_client, "c1", audio=wav_bytes(seconds=0.4, sample_rate=44_100))
    assert r.status_code == 200, r.text
    assert r.json()["modalities"] == ["audio"]


def test_a_post_hands_no_dependency_to_the_thread_pool(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI runs a plain `def` dependency in its thread pool: a thread hand-off each, per request."""
    import fastapi.dependencies.utils

    handed_off: list[str] = []
    run_in_threadpool = fastapi.dependencies.utils.run_in_threadpool

    async def recording(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        handed_off.append(getattr(call, "__name__", repr(call)))
        return await run_in_threadpool(call, *args, **kwargs)

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", recording)
    r = post(tiny_client, "c1", audio=wav_bytes(seconds=0.4), transcript="hello there")
    assert r.status_code == 200, r.text
    assert handed_off == []


def test_answer_for_index_i_depends_only_on_utterances_up_to_i(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(context_window=16))
    texts = ["hello", "you never listen", "that is unfair", "I am leaving", "fine"]
    full = [client.post("/conversations/full/utterances", json={"transcript": t}).json() for t in texts]
    prefix = [
        client.post("/conversations/prefix/utterances", json={"transcript": t}).json() for t in texts[:3]
    ]
    for i in range(3):
        assert prefix[i]["probabilities"] == pytest.approx(full[i]["probabilities"], abs=1e-6)
    # and the context matters: the same words alone give another answer than after the conversation
    alone = client.post("/conversations/alone/utterances", json={"transcript": texts[3]}).json()
    assert alone["probabilities"] != pytest.approx(full[3]["probabilities"], abs=1e-9)


def test_answers_match_the_network_run_over_the_whole_conversation(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient], tiny_checkpoint: Any
) -> None:
    """The service's probability for index i == row i of one causal forward over the stored vectors."""
    client = start_client(make_settings(context_window=16))
    texts = ["oh no", "what happened", "it broke again", "I am so angry"]
    answers = [client.post("/conversations/c/utterances", json={"transcript": t}).json() for t in texts]
    encoder = client.app.state.services.engine.encoders["text"]  # type: ignore[attr-defined]
    rows = encoder.encode_batch(texts).half().float()[None]  # (1, U, Dt): stored as float16
    model = load_checkpoint(tiny_checkpoint).model
    with torch.no_grad():
        logits = model(
            rows,
            torch.zeros(1, len(texts), model.cfg.audio_dim),
            torch.ones(1, len(texts), dtype=torch.bool),
            torch.zeros(1, len(texts), dtype=torch.bool),
        ).logits[0]
    expected = torch.softmax(logits.double(), -1)
    for i, answer in enumerate(answers):
        assert list(answer["probabilities"].values()) == pytest.approx(expected[i].tolist(), abs=1e-5)


def test_context_is_bounded_by_the_window(tiny_client: TestClient) -> None:
    sizes = [
        tiny_client.post("/conversations/c/utterances", json={"transcript": f"turn {i}"}).json()
        for i in range(7)
    ]
    assert [s["context_size"] for s in sizes] == [1, 2, 3, 4, 4, 4, 4]


def test_get_returns_utterances_in_order_without_transcripts_by_default(tiny_client: TestClient) -> None:
    for i in range(3):
        post(tiny_client, "c1", transcript=f"sentence {i}", utterance_id=f"u{i}", speaker="caller")
    r = tiny_client.get("/conversations/c1")
    assert r.status_code == 200
    body = r.json()
    assert body["conversation_id"] == "c1" and body["utterance_count"] == 3
    assert [u["index"] for u in body["utterances"]] == [0, 1, 2]
    assert [u["utterance_id"] for u in body["utterances"]] == ["u0", "u1", "u2"]
    for u in body["utterances"]:
        assert u["transcript"] is None and u["speaker"] == "caller" and u["modalities"] == ["text"]
        assert set(u["prediction"]) == {"emotion", "probabilities", "context_size"}
        assert "audio" not in u


def test_get_returns_transcripts_when_the_service_keeps_them(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(store_transcripts=True))
    post(client, "c1", transcript="Dogs are sitting by the door")
    assert (
        client.get("/conversations/c1").json()["utterances"][0]["transcript"]
        == "Dogs are sitting by the door"
    )


def test_delete_erases_the_conversation(tiny_client: TestClient) -> None:
    post(tiny_client, "c1", transcript="hello")
    r = tiny_client.delete("/conversations/c1")
    assert r.status_code == 204 and r.content == b""
    assert_problem(tiny_client.get("/conversations/c1"), 404)
    assert_problem(tiny_client.delete("/conversations/c1"), 404)
    assert post(tiny_client, "c1", transcript="again").json()["index"] == 0  # a new conversation


def test_unknown_conversation_is_404_problem(tiny_client: TestClient) -> None:
    body = assert_problem(tiny_client.get("/conversations/nope"), 404)
    assert body["instance"] == "/conversations/nope"


def test_idempotent_retry_returns_the_first_answer_and_stores_nothing_new(tiny_client: TestClient) -> None:
    audio = wav_bytes(seed=3)
    first = post(tiny_client, "c1", transcript="hello", audio=audio, utterance_id="turn-1")
    again = post(tiny_client, "c1", transcript="hello", audio=audio, utterance_id="turn-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert tiny_client.get("/conversations/c1").json()["utterance_count"] == 1
    assert post(tiny_client, "c1", transcript="next").json()["index"] == 1


def test_same_utterance_id_with_other_content_is_409(tiny_client: TestClient) -> None:
    post(tiny_client, "c1", transcript="hello", utterance_id="turn-1")
    body = assert_problem(post(tiny_client, "c1", transcript="goodbye", utterance_id="turn-1"), 409)
    assert "turn-1" in body["detail"]
    assert tiny_client.get("/conversations/c1").json()["utterance_count"] == 1


def test_longest_valid_conversation_id_is_accepted(tiny_client: TestClient) -> None:
    cid = "A-z_0.9:" * 16
    assert len(cid) == 128
    assert tiny_client.post(f"/conversations/{cid}/utterances", json={"transcript": "hi"}).status_code == 200


def test_undecodable_audio_is_415_and_stores_nothing(tiny_client: TestClient) -> None:
    body = assert_problem(post(tiny_client, "c1", audio=b"this is not audio at all"), 415)
    assert "/" not in body["detail"].replace("application/", "")  # no paths
    assert_problem(tiny_client.get("/conversations/c1"), 404)


def test_audio_over_the_duration_limit_is_413(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(max_audio_seconds=1.0))
    assert_problem(post(client, "c1", audio=wav_bytes(seconds=2.0)), 413)
    assert post(client, "c1", audio=wav_bytes(seconds=0.5)).status_code == 200


def test_request_over_the_size_limit_is_413_before_reading(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(max_request_bytes=64 * 1024))
    big = wav_bytes(seconds=3.0)  # ~96 KB
    assert_problem(post(client, "c1", audio=big), 413)

    def chunks() -> Any:  # no Content-Length: the streaming cap must catch it
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    r = client.post(
        "/conversations/c1/utterances", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(r, 413)
    assert_problem(client.get("/conversations/c1"), 404)


def test_missing_or_invalid_api_key_is_401(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(api_keys=TEST_KEY_A))
    for headers in (
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {TEST_KEY_A}"},
    ):
        body = assert_problem(client.get("/conversations/c1", headers=headers), 401)
        assert TEST_KEY_A not in str(body)
        r = client.post("/conversations/c1/utterances", json={"transcript": "hi"}, headers=headers)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/health").status_code == 200  # probes need no key


def test_concurrent_posts_to_one_conversation_get_distinct_indices(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = start_client(make_settings(batch_max_wait_ms=5))
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: client.post("/conversations/c/utterances", json={"transcript": f"line {i}"}),
                range(16),
            )
        )
    assert all(r.status_code == 200 for r in results)
    assert sorted(r.json()["index"] for r in results) == list(range(16))


def test_multipart_audio_must_be_a_file_part(tiny_client: TestClient) -> None:
    r = tiny_client.post("/conversations/c1/utterances", data={"audio": "UklGRg==", "transcript": "hi"})
    assert_problem(r, 422)
    files = {"transcript": ("t.txt", b"hello", "text/plain")}
    assert_problem(tiny_client.post("/conversations/c1/utterances", files=files), 422)
