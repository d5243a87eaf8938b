"""Concurrency and idempotency: many posts to one conversation at once, on one app with the in-memory
store and on two apps sharing Redis. Every utterance is stored once under its own index, the answers
are the ones a sequential run over the stored order gives, and retries never store anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.reliability_support import asgi_client, assert_problem

N = 50
K = 4  # context window of these apps (make_settings' default)
URL = "/conversations/{cid}/utterances"


def text_of(i: int) -> str:
    return f"line {i}: " + " ".join(
        ["calm", "upset", "fine", "angry", "sad"][j % 5] for j in range(i % 7 + 1)
    )


async def post_all(clients: list[httpx.AsyncClient], cid: str, n: int) -> list[httpx.Response]:
    """n posts at once, spread over the clients (replicas) in turn."""
    replica = itertools.cycle(clients)
    return await asyncio.gather(
        *(
            next(replica).post(URL.format(cid=cid), json={"transcript": text_of(i), "utterance_id": f"u{i}"})
            for i in range(n)
        )
    )


async def check_one_conversation(clients: list[httpx.AsyncClient], cid: str) -> None:
    responses = await post_all(clients, cid, N)
    assert [r.status_code for r in responses] == [200] * N, [
        r.text for r in responses if r.status_code != 200
    ]
    answers = {r.json()["utterance_id"]: r.json() for r in responses}
    # indices 0..N-1, each exactly once
    assert sorted(a["index"] for a in answers.values()) == list(range(N))
    for client in clients:  # every replica sees the same conversation
        conversation = (await client.get(f"/conversations/{cid}")).json()
        assert conversation["utterance_count"] == N
        stored = conversation["utterances"]
        assert [u["index"] for u in stored] == list(range(N))
        assert sorted(u["utterance_id"] for u in stored) == sorted(answers)
        for u in stored:  # what GET says is what the client was told
            answer = answers[u["utterance_id"]]
            assert answer["index"] == u["index"]
            assert u["prediction"] == {k: answer[k] for k in ("emotion", "probabilities", "context_size")}
    # each answer saw its full causal window of the stored order, nothing lost, nothing from later
    for a in answers.values():
        assert a["context_size"] == min(a["index"] + 1, K), a
    # and equals a sequential replay of the stored order in a fresh conversation
    order = [u["utterance_id"] for u in stored]
    for i, uid in enumerate(order):
        replay = await clients[0].post(
            URL.format(cid=cid + "-replay"), json={"transcript": text_of(int(uid[1:]))}
        )
        assert replay.json()["index"] == i
        assert replay.json()["probabilities"] == pytest.approx(answers[uid]["probabilities"], abs=1e-5)


async def check_retries(clients: list[httpx.AsyncClient], cid: str) -> None:
    replica = itertools.cycle(clients)
    body = {"transcript": "I have been waiting for an hour", "utterance_id": "retry-1", "speaker": "caller"}
    first = await next(replica).post(URL.format(cid=cid), json=body)
    assert first.status_code == 200
    retries = await asyncio.gather(*(next(replica).post(URL.format(cid=cid), json=body) for _ in range(10)))
    for r in retries:
        assert r.status_code == 200 and r.json() == first.json()
        assert r.headers["idempotent-replayed"] == "true"
    # the same id with other content: 409, on every replica, and nothing stored
    for other in ({**body, "transcript": "something else"}, {**body, "speaker": "agent"}):
        conflicts = await asyncio.gather(*(c.post(URL.format(cid=cid), json=other) for c in clients))
        for r in conflicts:
            assert_problem(r, 409, slug="utterance-conflict")
    conversation = (await clients[0].get(f"/conversations/{cid}")).json()
    assert conversation["utterance_count"] == 1
    # concurrent first attempts of one new utterance: stored once, every caller gets that answer
    body2 = {"transcript": "and nobody called back", "utterance_id": "retry-2"}
    attempts = await asyncio.gather(*(next(replica).post(URL.format(cid=cid), json=body2) for _ in range(10)))
    assert [r.status_code for r in attempts] == [200] * 10
    assert len({r.text for r in attempts}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in attempts) == 1
    # and concurrent first attempts with different content: one wins, the others are 409
    racing = await asyncio.gather(
        *(
            next(replica).post(
                URL.format(cid=cid), json={"transcript": f"version {i}", "utterance_id": "race"}
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in racing) == [200] + [409] * 5
    conversation = (await clients[0].get(f"/conversations/{cid}")).json()
    assert conversation["utterance_count"] == 3
    assert [u["utterance_id"] for u in conversation["utterances"]] == ["retry-1", "retry-2", "race"]


@contextlib.asynccontextmanager
async def replicas(
    make_settings: Callable[..., Any], store: dict[str, Any]
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Ready apps on the store that `store` selects (`make_settings` overrides, empty for memory): two
    sharing Redis, or one in memory (its store is per process). Batches close after 2 ms; a retry waits
    up to 30 s for the first attempt's answer, so a loaded machine does not turn it into a 409."""
    settings = make_settings(batch_max_wait_ms=2, idempotency_wait_ms=30_000, **store)
    async with AsyncExitStack() as stack:
        count = 2 if settings.redis_url else 1
        yield [await stack.enter_async_context(asgi_client(create_app(settings))) for _ in range(count)]


@pytest.mark.asyncio
async def test_fifty_concurrent_posts_to_one_conversation_are_stored_once_each_in_order(
    make_settings: Callable[..., Any], store_settings: dict[str, Any]
) -> None:
    async with replicas(make_settings, store_settings) as clients:
        await check_one_conversation(clients, "busy")


@pytest.mark.asyncio
async def test_retries_replay_the_first_answer_and_conflicts_store_nothing(
    make_settings: Callable[..., Any], store_settings: dict[str, Any]
) -> None:
    async with replicas(make_settings, store_settings) as clients:
        await check_retries(clients, "retried")


@pytest.mark.asyncio
async def test_many_conversations_at_once_keep_to_themselves(
    make_settings: Callable[..., Any], redis_settings: dict[str, Any]
) -> None:
    """20 conversations x 8 utterances, all in flight together over two replicas: each conversation
    gets its own 0..7, in the order its client sent them (a client waits for each answer)."""
    async with replicas(make_settings, redis_settings) as clients:

        async def call(c: int) -> list[int]:
            indices = []
            for i in range(8):
                r = await clients[(c + i) % 2].post(
                    URL.format(cid=f"call-{c}"), json={"transcript": text_of(i)}
                )
                assert r.status_code == 200, r.text
                indices.append(r.json()["index"])
            return indices

        assert await asyncio.gather(*(call(c) for c in range(20))) == [list(range(8))] * 20
        for c in range(20):
            conversation = (await clients[c % 2].get(f"/conversations/call-{c}")).json()
            assert conversation["utterance_count"] == 8
            assert all(u["prediction"] is not None for u in conversation["utterances"])
