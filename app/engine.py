"""The engine: one object per process that turns an utterance into an emotion in causal context.

    decode audio (thread pool; resampled to the audio encoder's rate)
      -> text / audio encoders (text micro-batched; on CPU one clip per forward on the first free audio
         worker; a request alone gets every core, `app.cores`)
      -> store.append (atomic: idempotency check + next index + vectors + the window (i-K, i],
                       all stored before i was assigned)
      -> LPGNet over those <= K utterances (micro-batched across conversations, own thread)
      -> softmax of the last row -> store.set_prediction

Cost per utterance is flat in conversation length: the network only ever sees the last K utterances.
Nothing here runs model code on the event loop: the threads that do are `app.workers.ModelWorkers`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict

import numpy as np

from app.exceptions import ContextUnavailable, UnsupportedModality, UtteranceConflict, UtteranceInProgress
from app.metrics import STAGES, Metrics
from app.predictions import Prediction
from app.runtime import load_runtime, require_store_room
from app.settings import Settings
from app.store import ConversationKey, ConversationStore
from app.store.base import ContextRow, JSONDict, NewUtterance, StoredUtterance, UtteranceMeta
from app.utterances import ScoredUtterance, UtteranceRequest
from app.workers import ModelWorkers
from model.checkpoint import Checkpoint
from model.encoders.base import Encoder
from model.serving import Network

log = logging.getLogger(__name__)


_POLL_S = 0.025
# Tokens of attempts that stored an utterance here and then failed (a 503 after the append): their
# retries are scored at once instead of waiting for an answer that will not come. Bounded, oldest out.
_FAILED_ATTEMPTS_KEPT = 4096


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)


class Engine:
    """Owns the checkpoint, the encoders, the network and their batchers; talks to the store."""

    def __init__(
        self,
        *,
        checkpoint: Checkpoint,
        encoders: dict[str, Encoder],
        network: Network,
        store: ConversationStore,
        settings: Settings,
        metrics: Metrics,
        device: str = "cpu",
        backend: str = "torch",
    ) -> None:
        self.checkpoint = checkpoint
        self.labels = list(checkpoint.labels)
        self.encoders = encoders
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.device = device
        self.backend = backend  # what runs LPGNet: "torch", "onnx" or one per network (`build_network`)
        self.ready = False
        self._in_flight: set[str] = set()  # tokens of utterances stored here and still being scored
        self._failed: OrderedDict[str, None] = OrderedDict()  # tokens whose attempt here failed
        self.workers = ModelWorkers(encoders, network, checkpoint.config, settings, metrics, device)

    # ---- construction ------------------------------------------------------------------------------

    @classmethod
    def load(cls, settings: Settings, store: ConversationStore, metrics: Metrics) -> Engine:
        """Load the checkpoint's runtime (`app.runtime.load_runtime`; blocking: call it in a thread) and
        check that the store can hold a conversation of its vectors."""
        runtime = load_runtime(settings)
        require_store_room(store, runtime, settings)
        return cls(
            checkpoint=runtime.checkpoint,
            encoders=runtime.encoders,
            network=runtime.network,
            store=store,
            settings=settings,
            metrics=metrics,
            device=str(runtime.device),
            backend=runtime.backend,
        )

    def start(self) -> None:
        """Start the batchers on the running event loop."""
        self.workers.start()

    async def close(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        await self.workers.close()

    async def warm_up(self) -> None:
        """Run every stage once (decode, both encoders, the network at 1 and K utterances)."""
        started = time.perf_counter()
        await self.workers.warm_up()
        self.ready = True
        self.metrics.ready.set(1)
        log.info("engine warmed up in %.0f ms", (time.perf_counter() - started) * 1000)

    # ---- the request path --------------------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        return sorted(self.encoders)

    async def submit(self, request: UtteranceRequest) -> ScoredUtterance:
        """Score one utterance in the context of its conversation so far (idempotent per utterance_id)."""
        started = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        use_text = request.transcript is not None and "text" in self.encoders
        use_audio = request.audio is not None and "audio" in self.encoders
        if not (use_text or use_audio):
            raise UnsupportedModality(
                f"this model uses {' and '.join(self.modalities)}; the request carries none of them"
            )
        # off the loop: hashing a large upload takes milliseconds (hashlib releases the GIL)
        content_hash = await asyncio.to_thread(request.content_hash)
        if request.utterance_id is not None:  # a retry is answered before paying for the encoders
            t = time.perf_counter()
            known = await self.store.find(request.key, request.utterance_id)
            timings["store"] += _ms(t)
            if known is not None:
                return await self._replay(request, known, content_hash, timings, started)

        text_vector, truncated, audio_vector = await self._encode(request, use_text, use_audio, timings)
        meta = UtteranceMeta(
            token=uuid.uuid4().hex,
            utterance_id=request.utterance_id,
            content_hash=content_hash,
            created_at=time.time(),
            modalities=tuple(m for m, used in (("text", use_text), ("audio", use_audio)) if used),
            speaker=request.speaker,
            transcript=request.transcript if self.settings.store_transcripts else None,
            transcript_truncated=truncated,
        )
        t = time.perf_counter()
        appended = await self.store.append(
            request.key, NewUtterance(meta, text_vector, audio_vector), context=self.settings.context_window
        )
        timings["store"] += _ms(t)
        if not appended.created:  # a concurrent attempt with the same utterance_id got there first
            return await self._replay(request, appended.utterance, content_hash, timings, started)
        token = appended.utterance.meta.token
        self._in_flight.add(token)
        try:
            return await self._score(request.key, appended.utterance, timings, started, appended.window)
        except BaseException:  # stored but unanswered (store fault, model error, shutdown): a retry scores it
            self._failed[token] = None
            while len(self._failed) > _FAILED_ATTEMPTS_KEPT:
                self._failed.popitem(last=False)
            raise
        finally:
            self._in_flight.discard(token)

    async def _encode(
        self, request: UtteranceRequest, use_text: bool, use_audio: bool, timings: dict[str, float]
    ) -> tuple[np.ndarray | None, bool, np.ndarray | None]:
        """Encode both modalities: text goes to its batcher while the audio decodes. On CPU the two
        run side by side when other requests are in flight, else one after the other on every core
        (`app.cores`)."""
        owner = self.workers.owner([m for m, used in (("text", use_text), ("audio", use_audio)) if used])

        async def text() -> tuple[np.ndarray, bool] | None:
            if not use_text:
                return None
            assert request.transcript is not None
            t = time.perf_counter()
            vector, truncated = await self.workers.encode_text(request.transcript, owner)
            timings["encode_text"] = _ms(t)
            return vector, truncated

        async def audio() -> np.ndarray | None:
            if not use_audio:
                return None
            assert request.audio is not None
            t = time.perf_counter()
            waveform = await self.workers.decode(request.audio)
            timings["decode"] = _ms(t)
            t = time.perf_counter()
            vector: np.ndarray = await self.workers.encode_audio(waveform, owner)
            timings["encode_audio"] = _ms(t)
            return vector

        text_result, audio_vector = await asyncio.gather(text(), audio())
        text_vector, truncated = text_result if text_result is not None else (None, False)
        return text_vector, truncated, audio_vector

    async def _score(
        self,
        key: ConversationKey,
        utterance: StoredUtterance,
        timings: dict[str, float],
        started: float,
        rows: list[ContextRow] | None = None,
    ) -> ScoredUtterance:
        if rows is None:  # not read with the append (a retry scoring a dead attempt's utterance)
            t = time.perf_counter()
            rows = await self.store.window(key, utterance.index, self.settings.context_window)
            timings["store"] += _ms(t)
        if not rows or rows[-1].index != utterance.index:
            raise ContextUnavailable()
        t = time.perf_counter()
        probabilities: np.ndarray = await self.workers.score(rows)
        timings["model"] = _ms(t)
        # The answer is final before it is stored, so a retry gets exactly these bytes back; the
        # last write is thus not in the timings.
        timings["total"] = _ms(started)
        prediction = Prediction.from_probabilities(
            probabilities,
            self.checkpoint,
            modalities=utterance.meta.modalities,
            transcript_truncated=utterance.meta.transcript_truncated,
            context_size=len(rows),
            timings_ms=timings,
        )
        if not await self.store.set_prediction(key, utterance.index, utterance.meta.token, prediction):
            # another attempt at this utterance stored its answer first: that one is the answer
            current = await self.store.get(key, utterance.index)
            if current is not None and current.meta.token == utterance.meta.token and current.prediction:
                return ScoredUtterance(utterance.index, utterance.meta.utterance_id, current.prediction, True)
        self.metrics.observe_stages(timings)
        self.metrics.predictions.labels(prediction.emotion).inc()
        return ScoredUtterance(utterance.index, utterance.meta.utterance_id, prediction)

    async def _replay(
        self,
        request: UtteranceRequest,
        known: StoredUtterance,
        content_hash: str,
        timings: dict[str, float],
        started: float,
    ) -> ScoredUtterance:
        """Answer a repeated utterance_id: the stored answer, after a brief wait if it is in flight.

        An utterance stored without an answer (its attempt got a 503 after the append, or its replica
        died) is scored here from the stored context, which is exactly what the first attempt saw: at
        once when that attempt failed in this process, else after `idempotency_wait_ms` without an
        answer. Should the first attempt still be alive elsewhere, the store keeps one answer (the first
        stored), and both return it.
        """
        uid = request.utterance_id
        assert uid is not None
        if known.meta.content_hash != content_hash:
            raise UtteranceConflict(uid)
        deadline = time.monotonic() + self.settings.idempotency_wait_ms / 1000.0
        current: StoredUtterance | None = known
        token = known.meta.token
        while (
            current is not None
            and current.prediction is None
            and token not in self._failed
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(_POLL_S)
            current = await self.store.get(request.key, known.index)
        if current is None:  # dropped from the store while we waited (conversation deleted or trimmed)
            raise UtteranceInProgress(uid)
        if current.prediction is not None:
            return ScoredUtterance(current.index, uid, current.prediction, replayed=True)
        if token in self._in_flight:  # the first attempt is still being scored by this process
            raise UtteranceInProgress(uid)
        try:
            return await self._score(request.key, current, timings, started)
        except ContextUnavailable:
            raise UtteranceInProgress(uid) from None

    def describe(self) -> JSONDict:
        ckpt = self.checkpoint
        return {
            "name": ckpt.name,
            "version": ckpt.version,
            "labels": self.labels,
            "profile": self.settings.profile or ckpt.profile,
            "context": ckpt.context,
            "context_window": self.settings.context_window,
            "modalities": self.modalities,
            "text_only_network": getattr(ckpt, "text_only", None) is not None,
            "chat_text_network": getattr(ckpt, "chat_text", None) is not None,
            "voice_weight": voice.weight if (voice := getattr(ckpt, "voice", None)) is not None else 0.0,
            "audio_weight": ckpt.serving.audio_weight,
            "backend": self.backend,
            "device": self.device,
            **self.workers.describe(),  # torch_threads(_alone), audio_workers, encoders
        }
