"""In-process conversation store: TTL, LRU bound on conversations, bounded utterances per conversation.

Every method runs without awaiting in between, so each is atomic on the event loop; no lock needed.
Predictions are kept encoded (`app.predictions.encode_prediction`), the very text Redis keeps, and
decoded on every read: both stores go through the one versioned codec.
Fine for one replica; use `RedisStore` when several replicas serve the same conversations.
Conversations are keyed by (namespace, conversation id): each API key has its own id space.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.exceptions import ConversationNotFound
from app.predictions import Prediction, decode_prediction, encode_prediction
from app.store.base import (
    VECTOR_DTYPE,
    AppendResult,
    ContextRow,
    Conversation,
    ConversationKey,
    ConversationStore,
    NewUtterance,
    StoredUtterance,
    UtteranceMeta,
)


@dataclass
class _State:
    owner: str
    created_at: float
    touched_at: float  # monotonic clock, for TTL and LRU
    updated_at: float  # wall clock of the same moment, for GET (stable between reads)
    next_index: int = 0
    utterances: dict[int, UtteranceMeta] = field(default_factory=dict)  # insertion order == index order
    predictions: dict[int, str] = field(default_factory=dict)  # index -> encoded Prediction
    ids: dict[str, int] = field(default_factory=dict)  # client utterance_id -> index
    vectors: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = field(default_factory=dict)


def _slot(key: ConversationKey) -> tuple[str, str]:
    return (key.namespace, key.conversation_id)


def _stored(state: _State, index: int) -> StoredUtterance:
    """The kept utterance `index`, its prediction decoded."""
    encoded = state.predictions.get(index)
    return StoredUtterance(
        index, state.utterances[index], None if encoded is None else decode_prediction(encoded)
    )


def _rows(state: _State, index: int, size: int) -> list[ContextRow]:
    return [
        ContextRow(i, *state.vectors[i])
        for i in range(max(0, index - size + 1), index + 1)
        if i in state.vectors
    ]


def _half(vector: np.ndarray | None) -> np.ndarray | None:
    return None if vector is None else np.asarray(vector, dtype=VECTOR_DTYPE).reshape(-1).copy()


class MemoryStore(ConversationStore):
    def __init__(
        self,
        *,
        ttl_s: int,
        max_conversations: int,
        max_utterances: int,
        vectors_kept: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_utterances=max_utterances, vectors_kept=vectors_kept)
        self.max_conversations = max_conversations
        self.evicted = 0  # conversations dropped by the LRU bound (not by the TTL) since start
        self._clock = clock
        # least recently written first: TTL expiry and LRU eviction both pop from the front
        self._conversations: OrderedDict[tuple[str, str], _State] = OrderedDict()

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl_s
        while self._conversations:
            cid, state = next(iter(self._conversations.items()))
            if state.touched_at > deadline:
                break
            del self._conversations[cid]

    def _lookup(self, key: ConversationKey) -> _State | None:
        self._expire()
        state = self._conversations.get(_slot(key))
        if state is not None and state.owner != key.namespace:
            raise ConversationNotFound(key.conversation_id)
        return state

    def _touch(self, key: ConversationKey, state: _State) -> None:
        state.touched_at = self._clock()
        state.updated_at = time.time()
        self._conversations.move_to_end(_slot(key))

    async def append(self, key: ConversationKey, utterance: NewUtterance, context: int = 0) -> AppendResult:
        state = self._lookup(key)
        uid = utterance.meta.utterance_id
        if state is not None and uid is not None and uid in state.ids:
            return AppendResult(_stored(state, state.ids[uid]), created=False)
        if state is None:
            now = time.time()
            state = _State(owner=key.namespace, created_at=now, touched_at=self._clock(), updated_at=now)
            self._conversations[_slot(key)] = state
            while len(self._conversations) > self.max_conversations:
                self._conversations.popitem(last=False)
                self.evicted += 1
        index = state.next_index
        state.next_index += 1
        state.utterances[index] = utterance.meta
        if uid is not None:
            state.ids[uid] = index
        state.vectors[index] = (_half(utterance.text_vector), _half(utterance.audio_vector))
        state.vectors.pop(index - self.vectors_kept, None)
        dropped = state.utterances.pop(index - self.max_utterances, None)
        state.predictions.pop(index - self.max_utterances, None)
        if dropped is not None and dropped.utterance_id is not None:
            state.ids.pop(dropped.utterance_id, None)
        self._touch(key, state)
        return AppendResult(
            StoredUtterance(index, utterance.meta),
            created=True,
            window=_rows(state, index, context) if context else None,
        )

    async def find(self, key: ConversationKey, utterance_id: str) -> StoredUtterance | None:
        state = self._lookup(key)
        if state is None or utterance_id not in state.ids:
            return None
        return _stored(state, state.ids[utterance_id])

    async def get(self, key: ConversationKey, index: int) -> StoredUtterance | None:
        state = self._lookup(key)
        return None if state is None or index not in state.utterances else _stored(state, index)

    async def window(self, key: ConversationKey, index: int, size: int) -> list[ContextRow]:
        state = self._lookup(key)
        return [] if state is None else _rows(state, index, size)

    async def set_prediction(
        self, key: ConversationKey, index: int, token: str, prediction: Prediction
    ) -> bool:
        state = self._lookup(key)
        meta = None if state is None else state.utterances.get(index)
        if state is None or meta is None or meta.token != token or index in state.predictions:
            return False
        state.predictions[index] = encode_prediction(prediction)
        self._touch(key, state)
        return True

    async def conversation(self, key: ConversationKey) -> Conversation | None:
        state = self._lookup(key)
        if state is None:
            return None
        return Conversation(
            conversation_id=key.conversation_id,
            utterance_count=state.next_index,
            created_at=state.created_at,
            updated_at=state.updated_at,
            utterances=[_stored(state, i) for i in state.utterances],
        )

    async def delete(self, key: ConversationKey) -> bool:
        if self._lookup(key) is None:
            return False
        del self._conversations[_slot(key)]
        return True

    async def ping(self) -> None:
        return None

    async def count_active(self) -> int:
        self._expire()
        return len(self._conversations)
