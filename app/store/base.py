"""The conversation store interface and the records it keeps.

Per utterance the store keeps the encoder vectors (float16, only for the most recent ones: the model's
context), the client's utterance id and a content hash (idempotency), metadata, and the prediction once
it is known (versioned: `app.predictions.encode_prediction`). Never raw audio. Conversations are keyed
by (namespace, id): each namespace (hashed API key) has its own id space, so one key can neither reach
another's conversation nor learn that it exists, and two keys may use the same id without colliding.
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.predictions import Prediction
from model.serving import STORAGE_DTYPE

JSONDict = dict[str, Any]
# float16, the precision the checkpoint's ServingContract was evaluated with (`lpgnet evaluate`)
VECTOR_DTYPE = STORAGE_DTYPE


@dataclass(frozen=True)
class ConversationKey:
    namespace: str  # "" when API keys are off, else a hash of the key
    conversation_id: str


@dataclass(frozen=True)
class UtteranceMeta:
    """What is stored about an utterance besides its vectors and prediction."""

    token: str  # random per append: a late prediction never lands on a re-created conversation
    utterance_id: str | None
    content_hash: str
    created_at: float  # unix seconds
    modalities: tuple[str, ...]
    speaker: str | None = None
    transcript: str | None = None  # only when the service is configured to keep transcripts
    transcript_truncated: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> UtteranceMeta:
        d = json.loads(raw)
        d["modalities"] = tuple(d["modalities"])
        return cls(**d)


@dataclass(frozen=True)
class NewUtterance:
    meta: UtteranceMeta
    text_vector: np.ndarray | None  # (Dt,)
    audio_vector: np.ndarray | None  # (Da,)


@dataclass(frozen=True)
class StoredUtterance:
    index: int
    meta: UtteranceMeta
    prediction: Prediction | None = None  # None while the first attempt is in flight


@dataclass(frozen=True)
class AppendResult:
    utterance: StoredUtterance
    created: bool  # False: the utterance_id was known and `utterance` is the stored one
    # created with `append(..., context=K)`: the rows of (index - K, index], read in the same atomic step
    window: list[ContextRow] | None = None


@dataclass(frozen=True)
class ContextRow:
    """One utterance of the model's context; a missing modality is None."""

    index: int
    text: np.ndarray | None  # (Dt,) float16
    audio: np.ndarray | None  # (Da,) float16


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    utterance_count: int  # indices assigned so far; the oldest may have been dropped
    created_at: float
    updated_at: float
    utterances: list[StoredUtterance] = field(default_factory=list)  # by index


def pack_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).reshape(-1).tobytes()


def unpack_vector(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE)


class ConversationStore(abc.ABC):
    """Async conversation state; every method may raise `StoreUnavailable`.

    A `ConversationKey` addresses only its own namespace's conversations (a stored owner that does not
    match raises `ConversationNotFound`, as a second line of defence). `append` assigns indices
    atomically: two replicas never assign the same one.
    """

    evicted = 0  # conversations dropped before their TTL to respect a bound (in-memory LRU)
    evicted_for_bytes = 0  # of those, dropped to respect the bound on bytes (in memory)
    bytes_held = 0  # estimated bytes of what the store holds (in memory; Redis reports its own memory)

    def __init__(self, *, ttl_s: int, max_utterances: int, vectors_kept: int) -> None:
        self.ttl_s = ttl_s
        self.max_utterances = max_utterances  # per conversation; older utterances are dropped
        self.vectors_kept = vectors_kept  # per conversation; older utterances keep no vectors

    @abc.abstractmethod
    async def append(self, key: ConversationKey, utterance: NewUtterance, context: int = 0) -> AppendResult:
        """Store an utterance under the next index, or return the stored one with its utterance_id.

        With `context` K > 0 a created utterance comes back with its window (as `window(index, K)`),
        read atomically with the append: however many appends follow at once, they cannot trim it.
        """

    @abc.abstractmethod
    async def find(self, key: ConversationKey, utterance_id: str) -> StoredUtterance | None:
        """The stored utterance with this client utterance_id, if any."""

    @abc.abstractmethod
    async def get(self, key: ConversationKey, index: int) -> StoredUtterance | None: ...

    @abc.abstractmethod
    async def window(self, key: ConversationKey, index: int, size: int) -> list[ContextRow]:
        """Rows of indices (index - size, index] that still have a vector, by index."""

    @abc.abstractmethod
    async def set_prediction(
        self, key: ConversationKey, index: int, token: str, prediction: Prediction
    ) -> bool:
        """Attach the prediction to utterance `index` if it is still the one with `token` and has none
        (kept encoded, `app.predictions.encode_prediction`; reads decode it)."""

    @abc.abstractmethod
    async def conversation(self, key: ConversationKey) -> Conversation | None: ...

    @abc.abstractmethod
    async def delete(self, key: ConversationKey) -> bool:
        """Erase the conversation; False when there was none."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers."""

    @abc.abstractmethod
    async def count_active(self) -> int:
        """Conversations touched within the TTL (approximate for shared stores)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
