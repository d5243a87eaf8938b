"""Conversation state behind one interface: in memory for one replica, Redis for many."""

from __future__ import annotations

from app.settings import Settings
from app.store.base import ConversationKey, ConversationStore
from app.store.memory import MemoryStore
from app.store.redis_store import RedisStore


def build_store(settings: Settings) -> ConversationStore:
    """The store the settings ask for: Redis when `redis_url` is set, else in memory."""
    ttl_s, max_utterances, vectors_kept = (
        settings.session_ttl_s,
        settings.max_utterances_stored,
        settings.vectors_kept,
    )
    if settings.redis_url:
        return RedisStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            timeout_s=settings.redis_timeout_s,
            ttl_s=ttl_s,
            max_utterances=max_utterances,
            vectors_kept=vectors_kept,
        )
    return MemoryStore(
        max_conversations=settings.max_conversations,
        max_bytes=settings.max_store_bytes,
        ttl_s=ttl_s,
        max_utterances=max_utterances,
        vectors_kept=vectors_kept,
    )


__all__ = ["ConversationKey", "ConversationStore", "MemoryStore", "RedisStore", "build_store"]
