"""ConversationStore behaviour, the same tests for MemoryStore and RedisStore (real Redis)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from app.exceptions import StoreUnavailable
from app.predictions import PredictionFormatError
from app.store import ConversationKey, ConversationStore, MemoryStore, RedisStore
from app.store.base import NewUtterance, UtteranceMeta
from tests.app_fixtures import make_prediction

TTL_S = 60


def utterance(
    uid: str | None = None, *, text: bool = True, audio: bool = True, seed: int = 0
) -> NewUtterance:
    rng = np.random.default_rng(seed)
    return NewUtterance(
        meta=UtteranceMeta(
            token=uuid.uuid4().hex,
            utterance_id=uid,
            content_hash=f"hash-{seed}",
            created_at=time.time(),
            modalities=tuple(m for m, on in (("text", text), ("audio", audio)) if on),
            speaker="caller",
        ),
        text_vector=rng.standard_normal(6).astype(np.float32) if text else None,
        audio_vector=rng.standard_normal(3).astype(np.float32) if audio else None,
    )


@pytest_asyncio.fixture
async def make_store(store_settings: dict[str, Any]) -> AsyncIterator[Callable[..., ConversationStore]]:
    """Stores of the kind `store_settings` names (memory, or Redis under this test's prefix); closed after."""
    stores: list[ConversationStore] = []

    def make(*, max_utterances: int = 100, vectors_kept: int = 8, ttl_s: int = TTL_S) -> ConversationStore:
        store: ConversationStore
        if store_settings:
            store = RedisStore(
                store_settings["redis_url"],
                prefix=store_settings["redis_prefix"],
                ttl_s=ttl_s,
                max_utterances=max_utterances,
                vectors_kept=vectors_kept,
            )
        else:
            store = MemoryStore(
                ttl_s=ttl_s, max_conversations=1000, max_utterances=max_utterances, vectors_kept=vectors_kept
            )
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest_asyncio.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A small RedisStore under this test's prefix; closed after."""
    store = RedisStore(redis_url, prefix=redis_prefix, ttl_s=TTL_S, max_utterances=10, vectors_kept=4)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the same Redis, to look behind the store at its keys."""
    raw = aioredis.Redis.from_url(redis_url)
    yield raw
    await raw.aclose()


KEY = ConversationKey("", "conv-1")


@pytest.mark.asyncio
async def test_append_assigns_consecutive_indices_from_zero(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    indices = [(await store.append(KEY, utterance(seed=i))).utterance.index for i in range(5)]
    assert indices == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_concurrent_appends_never_share_an_index(make_store: Callable[..., ConversationStore]) -> None:
    stores = [make_store(), make_store()]  # two "replicas" (the same Redis, or one memory store twice)
    if isinstance(stores[0], MemoryStore):
        stores = [stores[0], stores[0]]
    results = await asyncio.gather(*(stores[i % 2].append(KEY, utterance(seed=i)) for i in range(40)))
    assert sorted(r.utterance.index for r in results) == list(range(40))


@pytest.mark.asyncio
async def test_known_utterance_id_returns_the_stored_utterance(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    first = await store.append(KEY, utterance("u-1", seed=1))
    again = await store.append(KEY, utterance("u-1", seed=2))
    assert first.created and not again.created
    assert again.utterance.index == first.utterance.index
    assert again.utterance.meta == first.utterance.meta
    assert (await store.find(KEY, "u-1")) == first.utterance
    assert await store.find(KEY, "u-2") is None
    conversation = await store.conversation(KEY)
    assert conversation is not None and len(conversation.utterances) == 1


@pytest.mark.asyncio
async def test_window_returns_the_last_k_vectors_as_float16(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    sent = [utterance(seed=i, audio=(i != 2)) for i in range(6)]
    for u in sent:
        await store.append(KEY, u)
    rows = await store.window(KEY, 4, 3)
    assert [r.index for r in rows] == [2, 3, 4]
    assert rows[0].audio is None and rows[0].text is not None
    for row in rows:
        assert row.text is not None and row.text.dtype == np.float16
        np.testing.assert_array_equal(row.text, sent[row.index].text_vector.astype(np.float16))  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_old_vectors_and_old_utterances_are_dropped(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store(max_utterances=5, vectors_kept=3)
    for i in range(8):
        await store.append(KEY, utterance(f"u-{i}", seed=i))
    assert [r.index for r in await store.window(KEY, 7, 8)] == [5, 6, 7]
    conversation = await store.conversation(KEY)
    assert conversation is not None
    assert conversation.utterance_count == 8
    assert [u.index for u in conversation.utterances] == [3, 4, 5, 6, 7]
    assert await store.find(KEY, "u-0") is None  # its id is forgotten with it
    assert await store.find(KEY, "u-3") is not None


@pytest.mark.asyncio
async def test_prediction_is_stored_once_and_only_for_its_token(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    stored = (await store.append(KEY, utterance(seed=0))).utterance
    assert not await store.set_prediction(KEY, 0, "not-the-token", make_prediction("sad"))
    assert await store.set_prediction(KEY, 0, stored.meta.token, make_prediction("angry"))
    assert not await store.set_prediction(KEY, 0, stored.meta.token, make_prediction("happy"))
    got = await store.get(KEY, 0)
    assert got is not None and got.prediction == make_prediction("angry")


@pytest.mark.asyncio
async def test_prediction_round_trips_through_the_store_on_every_read(
    make_store: Callable[..., ConversationStore],
) -> None:
    """What `set_prediction` takes is what `get`, `find`, `conversation` and a repeated append give
    back: equal field by field, floats exact, label order kept."""
    store = make_store()
    sent = [make_prediction(f"e{i}", seed=i) for i in range(3)]
    for i, p in enumerate(sent):
        stored = (await store.append(KEY, utterance(f"u-{i}", seed=i))).utterance
        assert stored.prediction is None
        assert await store.set_prediction(KEY, i, stored.meta.token, p)
    for i, p in enumerate(sent):
        got, found = await store.get(KEY, i), await store.find(KEY, f"u-{i}")
        assert got is not None and got.prediction == p
        assert list(got.prediction.probabilities) == list(p.probabilities)
        assert found is not None and found.prediction == p
        again = await store.append(KEY, utterance(f"u-{i}", seed=i))
        assert not again.created and again.utterance.prediction == p
    conversation = await store.conversation(KEY)
    assert conversation is not None
    assert [u.prediction for u in conversation.utterances] == sent


@pytest.mark.asyncio
async def test_late_prediction_never_lands_on_a_recreated_conversation(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    old = (await store.append(KEY, utterance(seed=0))).utterance
    assert await store.delete(KEY)
    assert not await store.set_prediction(KEY, 0, old.meta.token, make_prediction("sad"))
    assert await store.conversation(KEY) is None
    new = (await store.append(KEY, utterance(seed=1))).utterance
    assert new.index == 0
    assert not await store.set_prediction(KEY, 0, old.meta.token, make_prediction("sad"))
    got = await store.get(KEY, 0)
    assert got is not None and got.prediction is None


@pytest.mark.asyncio
async def test_conversation_lists_utterances_in_order_with_predictions(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    assert await store.conversation(KEY) is None
    for i in range(12):  # beyond 10: Redis hash fields are strings, the order must still be numeric
        stored = (await store.append(KEY, utterance(f"u-{i}", seed=i))).utterance
        if i % 2 == 0:
            await store.set_prediction(KEY, i, stored.meta.token, make_prediction(f"e{i}"))
    conversation = await store.conversation(KEY)
    assert conversation is not None
    assert [u.index for u in conversation.utterances] == list(range(12))
    assert [u.meta.utterance_id for u in conversation.utterances] == [f"u-{i}" for i in range(12)]
    assert [u.prediction for u in conversation.utterances][:3] == [
        make_prediction("e0"),
        None,
        make_prediction("e2"),
    ]
    assert conversation.created_at <= conversation.updated_at


@pytest.mark.asyncio
async def test_another_namespace_has_its_own_conversation_under_the_same_id(
    make_store: Callable[..., ConversationStore],
) -> None:
    store = make_store()
    owner, other = ConversationKey("ns-a", "shared-id"), ConversationKey("ns-b", "shared-id")
    await store.append(owner, utterance("u-1", seed=0))
    assert await store.conversation(other) is None
    assert await store.find(other, "u-1") is None
    assert await store.get(other, 0) is None
    assert await store.window(other, 0, 4) == []
    assert not await store.delete(other)
    appended = await store.append(other, utterance("u-1", seed=1))  # its own id space: a new conversation
    assert appended.created and appended.utterance.index == 0
    for key in (owner, other):
        conversation = await store.conversation(key)
        assert conversation is not None and len(conversation.utterances) == 1
    mine = await store.find(owner, "u-1")
    assert mine is not None and mine.meta.content_hash == "hash-0"


@pytest.mark.asyncio
async def test_delete_erases_everything(make_store: Callable[..., ConversationStore]) -> None:
    store = make_store()
    await store.append(KEY, utterance("u-1", seed=0))
    assert await store.delete(KEY)
    assert await store.conversation(KEY) is None
    assert await store.window(KEY, 0, 4) == []
    assert await store.find(KEY, "u-1") is None
    assert not await store.delete(KEY)


@pytest.mark.asyncio
async def test_active_conversations_are_counted(make_store: Callable[..., ConversationStore]) -> None:
    store = make_store()
    before = await store.count_active()
    for i in range(3):
        await store.append(ConversationKey("", f"c-{i}"), utterance(seed=i))
    assert await store.count_active() == before + 3
    await store.delete(ConversationKey("", "c-0"))
    assert await store.count_active() == before + 2


# ---- store-specific -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_memory_store_forgets_idle_conversations_after_the_ttl() -> None:
    now = [1000.0]
    store = MemoryStore(
        ttl_s=10, max_conversations=10, max_utterances=10, vectors_kept=4, clock=lambda: now[0]
    )
    await store.append(KEY, utterance(seed=0))
    now[0] += 9
    assert await store.conversation(KEY) is not None
    now[0] += 2
    assert await store.conversation(KEY) is None
    assert await store.count_active() == 0


@pytest.mark.asyncio
async def test_memory_store_evicts_the_least_recently_written_conversation() -> None:
    store = MemoryStore(ttl_s=100, max_conversations=2, max_utterances=10, vectors_kept=4)
    a, b, c = (ConversationKey("", x) for x in "abc")
    await store.append(a, utterance(seed=0))
    await store.append(b, utterance(seed=1))
    await store.append(a, utterance(seed=2))  # a is now more recent than b
    await store.append(c, utterance(seed=3))
    assert await store.conversation(b) is None
    assert await store.conversation(a) is not None and await store.conversation(c) is not None


@pytest.mark.asyncio
async def test_redis_store_sets_the_ttl_on_every_key(
    redis_store: RedisStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    stored = (await redis_store.append(KEY, utterance("u-1", seed=0))).utterance
    await redis_store.set_prediction(KEY, 0, stored.meta.token, make_prediction("sad"))
    keys = [k async for k in raw_redis.scan_iter(match=f"{redis_prefix}c:*")]
    assert len(keys) == 6  # meta ids utt pred vt va
    for key in keys:
        assert 0 < await raw_redis.ttl(key) <= TTL_S


@pytest.mark.asyncio
async def test_redis_store_never_stores_audio_or_transcripts_it_was_not_given(
    redis_store: RedisStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    await redis_store.append(KEY, utterance("u-1", seed=0))
    total = 0
    async for key in raw_redis.scan_iter(match=f"{redis_prefix}*"):
        kind = await raw_redis.type(key)
        if kind == b"hash":
            total += sum(len(v) for v in (await raw_redis.hgetall(key)).values())
    assert total < 1000  # vectors of 6 + 3 float16 and a little JSON: no waveform fits here


@pytest.mark.asyncio
async def test_redis_store_reads_unversioned_predictions_of_earlier_releases_and_refuses_unknown_formats(
    redis_store: RedisStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    """A Redis filled by a release before the format was versioned keeps answering (its records read
    as v0); a record of a format this release does not know is refused with a clear error."""
    for i in range(2):
        await redis_store.append(KEY, utterance(f"u-{i}", seed=i))
    p = make_prediction()
    v0 = {  # exactly what the earlier release wrote: the POST's prediction fields, no "v"
        "emotion": p.emotion,
        "probabilities": dict(p.probabilities),
        "modalities": list(p.modalities),
        "transcript_truncated": p.transcript_truncated,
        "context_size": p.context_size,
        "model": {"name": p.model_name, "version": p.model_version},
        "timings_ms": dict(p.timings_ms),
    }
    pred_key = f"{redis_prefix}c:{{{KEY.conversation_id}}}:pred"
    await raw_redis.hset(pred_key, mapping={"0": json.dumps(v0), "1": json.dumps({"v": 99, **v0})})
    got = await redis_store.get(KEY, 0)
    assert got is not None and got.prediction == p
    with pytest.raises(PredictionFormatError, match="format 99 is unknown to this release"):
        await redis_store.get(KEY, 1)


@pytest.mark.asyncio
async def test_unreachable_redis_raises_store_unavailable() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", ttl_s=10, max_utterances=10, vectors_kept=4, timeout_s=0.5)
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.append(KEY, utterance(seed=0))
    await store.close()
