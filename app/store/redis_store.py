"""Conversation store in Redis, shared by every replica of the service.

One conversation is six keys sharing a hash tag (one cluster slot), all expiring together, named
`<prefix>c:{<id>}:<part>` without API keys and `<prefix>c:<namespace>:{<id>}:<part>` with them (each
key has its own id space, so no key can address, or learn of, another's conversation):

    meta  hash: owner, next (index counter), created_at, updated_at
    ids   hash: client utterance_id -> index
    utt   hash: index -> UtteranceMeta JSON
    pred  hash: index -> prediction (`app.predictions.encode_prediction`: versioned JSON)
    vt    hash: index -> text vector (float16 bytes)
    va    hash: index -> audio vector (float16 bytes)

The append is one Lua script, so the idempotency check, the index assignment, the writes, the trims
and the TTL refresh happen atomically: replicas never assign the same index, and every index below an
assigned one is already stored. A sorted set (outside the scripts: another slot) tracks activity for
the active-conversations gauge.

Connections: after a Redis restart every pooled connection is dead, and the first command on each
fails ("Connection closed by server"). A command that fails to connect or loses its connection is
retried at once on a fresh connection (never after a timeout: a hanging Redis answers 503 within
`timeout_s`). That is safe because every step is idempotent: reads, HSETNX, DEL/ZADD, and the append,
which records its attempt's token (`ids` field `#<token>`, or the client's utterance_id) so that the
same attempt run twice finds itself and answers as the first run did, instead of appending again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.exceptions import ConversationNotFound, StoreUnavailable
from app.predictions import Prediction, decode_prediction, encode_prediction
from app.store.base import (
    AppendResult,
    ContextRow,
    Conversation,
    ConversationKey,
    ConversationStore,
    NewUtterance,
    StoredUtterance,
    UtteranceMeta,
    pack_vector,
    unpack_vector,
)

log = logging.getLogger(__name__)

_PARTS = ("meta", "ids", "utt", "pred", "vt", "va")
NOT_OWNER = -1
# Retries of a command whose connection failed, each on a fresh connection: one for the dead pooled
# connection, one more for a second dead one handed out by the pool meanwhile.
CONNECTION_RETRIES = 2

# KEYS: meta ids utt pred vt va
# ARGV: owner, utterance_id ('' = none), meta JSON, text bytes, audio bytes, has_text, has_audio,
#       ttl_s, vectors_kept, max_utterances, now, context (K: return the window (idx-K, idx]; 0: don't),
#       token (of this attempt: the same attempt run twice answers as it did the first time)
_APPEND = """
local meta, ids, utt, pred, vt, va = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local function created(idx)
  local k = tonumber(ARGV[12])
  if k > 0 then
    -- the window, read in this same atomic step: concurrent appends cannot trim it before it is read
    local first = math.max(0, idx - k + 1)
    local fields = {}
    for i = first, idx do fields[#fields + 1] = tostring(i) end
    return {1, idx, first, redis.call('HMGET', vt, unpack(fields)), redis.call('HMGET', va, unpack(fields))}
  end
  return {1, idx}
end
local owner = redis.call('HGET', meta, 'owner')
if owner and owner ~= ARGV[1] then return {-1} end
local uid, token = ARGV[2], ARGV[13]
-- '#' never starts a client utterance_id (app.ids), so '#<token>' cannot collide with one
local attempt = uid ~= '' and uid or ('#' .. token)
local known = redis.call('HGET', ids, attempt)
if known then
  local m = redis.call('HGET', utt, known)
  if m and cjson.decode(m)['token'] == token then return created(tonumber(known)) end
  if uid ~= '' then
    return {0, tonumber(known), m, redis.call('HGET', pred, known)}
  end
end
if not owner then
  -- a new conversation: clear leftovers of an expired one under the same id
  redis.call('DEL', ids, utt, pred, vt, va)
  redis.call('HSET', meta, 'owner', ARGV[1], 'created_at', ARGV[11])
end
local idx = redis.call('HINCRBY', meta, 'next', 1) - 1
local field = tostring(idx)
redis.call('HSET', meta, 'updated_at', ARGV[11])
redis.call('HSET', utt, field, ARGV[3])
redis.call('HSET', ids, attempt, field)
if ARGV[6] == '1' then redis.call('HSET', vt, field, ARGV[4]) end
if ARGV[7] == '1' then redis.call('HSET', va, field, ARGV[5]) end
local old = idx - tonumber(ARGV[9])
if old >= 0 then
  redis.call('HDEL', vt, tostring(old))
  redis.call('HDEL', va, tostring(old))
end
old = idx - tonumber(ARGV[10])
if old >= 0 then
  local m = redis.call('HGET', utt, tostring(old))
  if m then
    local dropped = cjson.decode(m)
    local old_uid = dropped['utterance_id']
    if type(old_uid) == 'string' then redis.call('HDEL', ids, old_uid) end
    redis.call('HDEL', ids, '#' .. dropped['token'])
  end
  redis.call('HDEL', utt, tostring(old))
  redis.call('HDEL', pred, tostring(old))
end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return created(idx)
"""

# KEYS: meta ids utt pred vt va ; ARGV: index, token, encoded prediction, ttl_s
_SET_PREDICTION = """
local m = redis.call('HGET', KEYS[3], ARGV[1])
if not m or cjson.decode(m)['token'] ~= ARGV[2] then return 0 end
local stored = redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[3])
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end  -- all keys of a conversation expire together
return stored
"""


def _rows(fields: list[str], texts: list[bytes | None], audios: list[bytes | None]) -> list[ContextRow]:
    return [
        ContextRow(int(f), None if t is None else unpack_vector(t), None if a is None else unpack_vector(a))
        for f, t, a in zip(fields, texts, audios, strict=True)
        if t is not None or a is not None
    ]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisStore(ConversationStore):
    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        max_utterances: int,
        vectors_kept: int,
        prefix: str = "lpgnet:",
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_utterances=max_utterances, vectors_kept=vectors_kept)
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            # ConnectionError only: a timed-out command may have run, and a hanging Redis must be a
            # prompt 503, not CONNECTION_RETRIES more timeouts
            retry=Retry(NoBackoff(), CONNECTION_RETRIES, supported_errors=(RedisConnectionError,)),
        )
        self._append = self._redis.register_script(_APPEND)
        self._set_prediction = self._redis.register_script(_SET_PREDICTION)
        self._active = f"{prefix}active"

    def _base(self, key: ConversationKey) -> str:
        # {...}: the cluster hash tag; ids cannot contain braces (app.ids), namespaces are hex
        if key.namespace:
            return f"{self.prefix}c:{key.namespace}:{{{key.conversation_id}}}"
        return f"{self.prefix}c:{{{key.conversation_id}}}"

    def _keys(self, key: ConversationKey) -> list[str]:
        base = self._base(key)
        return [f"{base}:{part}" for part in _PARTS]

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except RedisError as exc:
            log.warning("redis error: %s", type(exc).__name__, exc_info=True)
            raise StoreUnavailable("the conversation store is unavailable") from exc

    async def _check_owner(self, key: ConversationKey, meta_key: str) -> bool:
        """True when the conversation exists and is the caller's; ConversationNotFound when not theirs."""
        owner = await self._redis.hget(meta_key, "owner")
        if owner is None:
            return False
        if _text(owner) != key.namespace:
            raise ConversationNotFound(key.conversation_id)
        return True

    async def append(self, key: ConversationKey, utterance: NewUtterance, context: int = 0) -> AppendResult:
        meta = utterance.meta
        text, audio = utterance.text_vector, utterance.audio_vector
        now = time.time()
        async with self._guard():
            reply = await self._append(
                keys=self._keys(key),
                args=[
                    key.namespace,
                    meta.utterance_id or "",
                    meta.to_json(),
                    b"" if text is None else pack_vector(text),
                    b"" if audio is None else pack_vector(audio),
                    int(text is not None),
                    int(audio is not None),
                    self.ttl_s,
                    self.vectors_kept,
                    self.max_utterances,
                    repr(now),
                    context,
                    meta.token,
                ],
            )
            if int(reply[0]) == NOT_OWNER:
                raise ConversationNotFound(key.conversation_id)
            if int(reply[0]) == 0:
                return AppendResult(self._utterance(int(reply[1]), reply[2], reply[3]), created=False)
        await self._mark_active(self._base(key), now)
        window = None
        if context > 0:
            first = int(reply[2])
            window = _rows([str(first + i) for i in range(len(reply[3]))], reply[3], reply[4])
        return AppendResult(StoredUtterance(int(reply[1]), meta), created=True, window=window)

    async def _mark_active(self, member: str, now: float) -> None:
        """Best effort: the utterance is stored, and a 503 now would tell the client it was not."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._active, {member: now})
                pipe.zremrangebyscore(self._active, "-inf", now - self.ttl_s)
                await pipe.execute()
        except RedisError as exc:  # the gauge undercounts until the conversation's next utterance
            log.warning("redis error while marking a conversation active: %s", type(exc).__name__)

    @staticmethod
    def _utterance(index: int, meta: bytes, prediction: bytes | None) -> StoredUtterance:
        return StoredUtterance(
            index,
            UtteranceMeta.from_json(meta),
            None if prediction is None else decode_prediction(prediction),
        )

    async def find(self, key: ConversationKey, utterance_id: str) -> StoredUtterance | None:
        meta_key, ids_key, *_ = self._keys(key)
        async with self._guard():
            if not await self._check_owner(key, meta_key):
                return None
            index = await self._redis.hget(ids_key, utterance_id)
            return None if index is None else await self.get(key, int(index))

    async def get(self, key: ConversationKey, index: int) -> StoredUtterance | None:
        meta_key, _, utt_key, pred_key, *_ = self._keys(key)
        async with self._guard():
            if not await self._check_owner(key, meta_key):
                return None
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hget(utt_key, str(index))
                pipe.hget(pred_key, str(index))
                meta, prediction = await pipe.execute()
        return None if meta is None else self._utterance(index, meta, prediction)

    async def window(self, key: ConversationKey, index: int, size: int) -> list[ContextRow]:
        *_, vt_key, va_key = self._keys(key)
        fields = [str(i) for i in range(max(0, index - size + 1), index + 1)]
        async with self._guard(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(vt_key, fields)
            pipe.hmget(va_key, fields)
            texts, audios = await pipe.execute()
        return _rows(fields, texts, audios)

    async def set_prediction(
        self, key: ConversationKey, index: int, token: str, prediction: Prediction
    ) -> bool:
        async with self._guard():
            stored = await self._set_prediction(
                keys=self._keys(key), args=[str(index), token, encode_prediction(prediction), self.ttl_s]
            )
        return bool(stored)

    async def conversation(self, key: ConversationKey) -> Conversation | None:
        meta_key, _, utt_key, pred_key, *_ = self._keys(key)
        async with self._guard(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.hgetall(utt_key)
            pipe.hgetall(pred_key)
            meta, utts, preds = await pipe.execute()
        if not meta:
            return None
        if _text(meta[b"owner"]) != key.namespace:
            raise ConversationNotFound(key.conversation_id)
        utterances = sorted(
            (self._utterance(int(i), raw, preds.get(i)) for i, raw in utts.items()), key=lambda u: u.index
        )
        return Conversation(
            conversation_id=key.conversation_id,
            utterance_count=int(meta.get(b"next", 0)),
            created_at=float(meta[b"created_at"]),
            updated_at=float(meta.get(b"updated_at", meta[b"created_at"])),
            utterances=utterances,
        )

    async def delete(self, key: ConversationKey) -> bool:
        keys = self._keys(key)
        async with self._guard():
            if not await self._check_owner(key, keys[0]):
                return False
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(*keys)
                pipe.zrem(self._active, self._base(key))
                await pipe.execute()
        return True

    async def ping(self) -> None:
        async with self._guard():
            await self._redis.ping()

    async def count_active(self) -> int:
        async with self._guard():
            return int(await self._redis.zcount(self._active, time.time() - self.ttl_s, "+inf"))

    async def close(self) -> None:
        await self._redis.aclose()
