"""In-process conversation store: TTL, LRU bounds on conversations and on bytes, bounded utterances per
conversation.

Every method runs without awaiting in between, so each is atomic on the event loop; no lock needed.
Predictions are kept encoded (`app.predictions.encode_prediction`), the very text Redis keeps, and
decoded on every read: both stores go through the one versioned codec.
Fine for one replica; use `RedisStore` when several replicas serve the same conversations.
Conversations are keyed by (namespace, conversation id): each API key has its own id space.

The byte bound: every conversation carries the estimated bytes of what it holds (below), kept up to
date on each change (O(1), never a scan), and so does the store. A write that takes the store over
`max_bytes` evicts the least recently written conversations, never the one being written, until it is
back under. One conversation alone is bounded by `max_utterances` x (utterance + prediction) plus
`vectors_kept` x vectors; `bytes_at_bounds` says how much that is, and the service refuses to start
when `max_bytes` could not hold it (`app.runtime.require_store_room`).
"""

from __future__ import annotations

import sys
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
    nbytes: int = 0  # estimated bytes held, as charged below (`conversation_bytes` and on)


# ---- what the byte bound charges ---------------------------------------------------------------------
# Arrays and strings are charged what CPython holds for them: an array's nbytes (float16, as stored) plus
# its object header, a str's `sys.getsizeof` (header + 1, 2 or 4 bytes a character). The objects around
# them (the UtteranceMeta and its __dict__, tuples, ints, floats, dict entries; the _State, its empty
# dicts, the LRU entry) at flat rates, measured with tracemalloc on CPython 3.11 and rounded up:
# tests/test_store.py checks that the charge is never below what tracemalloc sees, so the bound errs on
# the side of holding less. Strings shared with other objects (a speaker name) are charged each time.
_ARRAY_BYTES = 128  # measured 112: the ndarray object beside its data
_ROW_BYTES = 128  # measured ~90: a kept row's tuple and its entry in `vectors`
_UTTERANCE_BYTES = 640  # measured 330 to 500: the meta object, its __dict__ and tuple, entries in 3 dicts
_CONVERSATION_BYTES = 1536  # measured ~1,000: the _State, its 4 dicts while small, the LRU entry


def row_bytes(text: np.ndarray | None, audio: np.ndarray | None) -> int:
    """A kept row of vectors (as stored: float16)."""
    return _ROW_BYTES + sum(v.nbytes + _ARRAY_BYTES for v in (text, audio) if v is not None)


def utterance_bytes(meta: UtteranceMeta) -> int:
    """A kept utterance without its vectors and prediction: its metadata's strings and the fixed rest."""
    strings = (meta.token, meta.utterance_id, meta.content_hash, meta.speaker, meta.transcript)
    return _UTTERANCE_BYTES + sum(sys.getsizeof(s) for s in strings if s is not None)


def prediction_bytes(encoded: str) -> int:
    """A kept prediction, as encoded (`app.predictions.encode_prediction`: ASCII JSON)."""
    return sys.getsizeof(encoded)


def conversation_bytes(key: ConversationKey) -> int:
    """A conversation with no utterances."""
    return _CONVERSATION_BYTES + sys.getsizeof(key.namespace) + sys.getsizeof(key.conversation_id)


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
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_utterances=max_utterances, vectors_kept=vectors_kept)
        self.max_conversations = max_conversations
        self.max_bytes = max_bytes  # None: bounded by conversations only
        self.evicted = 0  # conversations dropped by either LRU bound (not by the TTL) since start
        self.evicted_for_bytes = 0  # of those, dropped to keep under max_bytes
        self.bytes_held = 0  # the sum of the conversations' `nbytes`
        self._clock = clock
        # least recently written first: TTL expiry and LRU eviction both pop from the front
        self._conversations: OrderedDict[tuple[str, str], _State] = OrderedDict()

    def bytes_at_bounds(self, key: ConversationKey, largest: NewUtterance, prediction: Prediction) -> int:
        """The bytes one conversation under `key` holds at its bounds, every utterance like `largest` and
        answered with `prediction`: `max_utterances` of them, vectors for the last `vectors_kept`."""
        vectors = row_bytes(_half(largest.text_vector), _half(largest.audio_vector))
        answered = utterance_bytes(largest.meta) + prediction_bytes(encode_prediction(prediction))
        return conversation_bytes(key) + self.max_utterances * answered + self.vectors_kept * vectors

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl_s
        while self._conversations:
            cid, state = next(iter(self._conversations.items()))
            if state.touched_at > deadline:
                break
            self._drop(cid)

    def _drop(self, slot: tuple[str, str]) -> None:
        self.bytes_held -= self._conversations.pop(slot).nbytes

    def _charge(self, state: _State, nbytes: int) -> None:
        state.nbytes += nbytes
        self.bytes_held += nbytes

    def _evict_for_bytes(self, keep: tuple[str, str]) -> None:
        """Drop least recently written conversations until under max_bytes; never `keep` (being written,
        so most recent: it is last, and only it remains should it alone be over, which
        `require_store_room` rules out at start)."""
        if self.max_bytes is None:
            return
        while self.bytes_held > self.max_bytes:
            slot = next(iter(self._conversations))
            if slot == keep:
                return
            self._drop(slot)
            self.evicted += 1
            self.evicted_for_bytes += 1

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
            self._charge(state, conversation_bytes(key))
            while len(self._conversations) > self.max_conversations:
                self._drop(next(iter(self._conversations)))
                self.evicted += 1
        index = state.next_index
        state.next_index += 1
        state.utterances[index] = utterance.meta
        if uid is not None:
            state.ids[uid] = index
        vectors = (_half(utterance.text_vector), _half(utterance.audio_vector))
        state.vectors[index] = vectors
        added = utterance_bytes(utterance.meta) + row_bytes(*vectors)
        old = state.vectors.pop(index - self.vectors_kept, None)
        if old is not None:
            added -= row_bytes(*old)
        dropped = state.utterances.pop(index - self.max_utterances, None)
        if dropped is not None:
            added -= utterance_bytes(dropped)
            if dropped.utterance_id is not None:
                state.ids.pop(dropped.utterance_id, None)
        encoded = state.predictions.pop(index - self.max_utterances, None)
        if encoded is not None:
            added -= prediction_bytes(encoded)
        self._charge(state, added)
        self._touch(key, state)
        self._evict_for_bytes(keep=_slot(key))
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
        encoded = encode_prediction(prediction)
        state.predictions[index] = encoded
        self._charge(state, prediction_bytes(encoded))
        self._touch(key, state)
        self._evict_for_bytes(keep=_slot(key))
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
        self._drop(_slot(key))
        return True

    async def ping(self) -> None:
        return None

    async def count_active(self) -> int:
        self._expire()
        return len(self._conversations)
