"""Two app instances (replicas) sharing one Redis continue the same conversation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient


def test_two_replicas_continue_one_conversation(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    redis_settings: dict[str, Any],
) -> None:
    settings = make_settings(context_window=8, **redis_settings)
    a, b = start_client(settings), start_client(settings)
    texts = ["hello", "I waited an hour", "this is ridiculous", "fine, thanks"]
    answers = []
    for i, text in enumerate(texts):
        replica = (a, b)[i % 2]
        r = replica.post(
            "/conversations/shared/utterances", json={"transcript": text, "utterance_id": f"t{i}"}
        )
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert [x["index"] for x in answers] == [0, 1, 2, 3]
    assert [x["context_size"] for x in answers] == [1, 2, 3, 4]
    # a retry on the other replica gets the first answer
    retry = a.post("/conversations/shared/utterances", json={"transcript": texts[1], "utterance_id": "t1"})
    assert retry.json() == answers[1]
    for replica in (a, b):
        conversation = replica.get("/conversations/shared").json()
        assert [u["utterance_id"] for u in conversation["utterances"]] == ["t0", "t1", "t2", "t3"]
        assert [u["prediction"]["emotion"] for u in conversation["utterances"]] == [
            x["emotion"] for x in answers
        ]
    assert b.delete("/conversations/shared").status_code == 204
    assert a.get("/conversations/shared").status_code == 404


def test_the_same_conversation_in_one_replica_scores_like_in_two(
    make_settings: Callable[..., Any],
    start_client: Callable[..., TestClient],
    redis_settings: dict[str, Any],
) -> None:
    settings = make_settings(**redis_settings)
    a, b = start_client(settings), start_client(settings)
    texts = ["one", "two", "three"]
    alternating = [
        (a, b)[i % 2].post("/conversations/x/utterances", json={"transcript": t}).json()
        for i, t in enumerate(texts)
    ]
    single = [a.post("/conversations/y/utterances", json={"transcript": t}).json() for t in texts]
    for p, q in zip(alternating, single, strict=True):
        assert p["probabilities"] == q["probabilities"]
