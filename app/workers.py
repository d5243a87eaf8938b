"""The threads that run model code for the engine, so that none of it runs on the event loop.

    decode  `decode_workers` threads: uploads decoded and resampled to the audio encoder's rate
    text    a micro-batcher over the text encoder
    audio   on CPU `encoder_workers` threads, one clip per forward, each clip to the first free worker
            as it arrives (emotion2vec is compute-bound at batch 1 and a padded batch of 8 costs ~26%
            more per clip, bench/RESULTS.md; a batch would also hold a clip until the slowest clip of
            the previous batch is done); on CUDA a micro-batcher, one padded batch
    model   a micro-batcher over LPGNet: context windows of <= K utterances, padded, last row's softmax

Every encoder or network call is a job of `app.cores.CoreBudget`, which sets the torch intra-op thread
count of the thread that runs it (per thread, never process-wide): on CPU every core for a job that is
the only work in flight (`adaptive_threads`), else 1, since the batchers and the audio workers run side
by side and 2-thread OpenMP teams on 2 cores turn every barrier into a scheduler wait. `torch_threads`
fixes the count instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch

from app.batching import MicroBatcher
from app.cores import CoreBudget, Job, Owner
from app.metrics import Metrics
from app.settings import Settings
from app.store.base import ContextRow, JSONDict
from app.utterances import decode_upload, tone_wav
from model.encoders.base import Encoder
from model.encoders.devices import count_available_cpus
from model.encoders.voiced import VoicedAudioEncoder
from model.lpgnet import LPGNetConfig
from model.serving import ArrayWindow, Network, last_row_probabilities

log = logging.getLogger(__name__)


class ModelWorkers:
    """The decode pool, the text / audio / network batchers and the audio worker pool of one engine."""

    def __init__(
        self,
        encoders: dict[str, Encoder],
        network: Network,
        config: LPGNetConfig,
        settings: Settings,
        metrics: Metrics,
        device: str,
    ) -> None:
        self.encoders = encoders
        self.network = network  # called in the model batcher's thread (PyTorch or onnxruntime)
        self.config = config
        # the stored audio vectors: the network's features, then a voice expert's if the checkpoint has one
        self.audio_dim = encoders["audio"].spec.dim if "audio" in encoders else config.audio_dim
        self.settings = settings
        self.cores = _core_budget(settings, device)
        self.torch_threads = self.cores.shared  # of a job with company (`cores.alone`: of a lone one)
        self._widens = {modality: _follows_lease(e) for modality, e in encoders.items()}

        def batcher(name: str, run: Callable[[Sequence[Any]], Sequence[Any]]) -> MicroBatcher[Any, Any]:
            return MicroBatcher(
                name,
                run,
                max_size=settings.batch_max_size,
                max_wait_s=settings.batch_max_wait_ms / 1000.0,
                on_batch=metrics.batch_observer(name),
            )

        self.audio_workers = (settings.encoder_workers or count_available_cpus()) if device == "cpu" else 0
        uses_audio = "audio" in encoders
        self.text = batcher("text", self._encode_texts) if "text" in encoders else None
        self.audio = batcher("audio", self._encode_audios) if uses_audio and not self.audio_workers else None
        self.model = batcher("model", self._score_jobs)
        self._decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="lpgnet-decode")
        self._audio_pool = (
            ThreadPoolExecutor(self.audio_workers, thread_name_prefix="lpgnet-audio-worker")
            if uses_audio and self.audio_workers
            else None
        )

    def _batchers(self) -> list[MicroBatcher[Any, Any]]:
        return [b for b in (self.text, self.audio, self.model) if b is not None]

    def start(self) -> None:
        """Start the batchers on the running event loop."""
        for b in self._batchers():
            b.start()

    async def close(self) -> None:
        for b in self._batchers():
            await b.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        if self._audio_pool is not None:
            self._audio_pool.shutdown(wait=False, cancel_futures=True)

    async def warm_up(self) -> None:
        """Run every stage once: decode, both encoders, the network at 1 and K utterances."""
        if self.text is not None:
            await self.encode_text("Warming up.")
        if "audio" in self.encoders:
            waveform = await self.decode(tone_wav(seconds=1.0))
            await self.encode_audio(waveform)  # alone: on every core
            # as many clips as workers, so every worker thread has run once before the first burst
            await asyncio.gather(*(self.encode_audio(waveform) for _ in range(max(1, self.audio_workers))))
        cfg = self.config
        for length in sorted({1, self.settings.context_window}):
            row = (np.zeros(cfg.text_dim, np.float16), np.zeros(self.audio_dim, np.float16))
            await self.score([ContextRow(i, *row) for i in range(length)])
            if "text" in self.encoders:  # a text-only window: the checkpoint's text-only network, if any
                await self.score([ContextRow(i, row[0], None) for i in range(length)])

    async def decode(self, data: bytes) -> np.ndarray:
        """An uploaded file as a mono waveform at the audio encoder's rate (typed errors become 4xx)."""
        encoder = self.encoders["audio"]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._decode_pool, decode_upload, data, self.settings, encoder.sample_rate
        )

    def owner(self, modalities: Collection[str]) -> Owner:
        """The core budget's token for one request that encodes these modalities: its calls take every
        core (alone) only if all of them follow the lease (torch modules, onnxruntime graphs with a session
        per count); with a numpy extractor among them they run side by side (the offline profile's
        MiniLM and prosody: 8% faster so)."""
        return Owner(widen=all(self._widens[m] for m in modalities))

    async def encode_text(self, transcript: str, owner: Owner | None = None) -> tuple[np.ndarray, bool]:
        """The transcript's vector (Dt,) and whether it was truncated to the encoder's length.
        `owner`: the request it is part of (`owner()`; None: a request of its own)."""
        assert self.text is not None
        return await self._submit(self.text, Job(transcript, owner))

    async def encode_audio(self, waveform: np.ndarray, owner: Owner | None = None) -> np.ndarray:
        """The vector (Da,) of a waveform at the audio encoder's rate.

        A voiced encoder whose networks' part is a one-thread extractor (prosody beside eGeMAPS: the
        default weights) runs its two parts as two jobs on the audio workers, side by side when a core
        is free; one whose part takes every core when alone (an onnxruntime or torch encoder) runs as one
        job, its voice part after it, so the network part keeps every core."""
        if self._audio_pool is None:  # CUDA: padded batches
            assert self.audio is not None
            return await self._submit(self.audio, Job(waveform, owner))
        encoder = self.encoders["audio"]
        if not isinstance(encoder, VoicedAudioEncoder) or self._widens["audio"]:
            return await self._run_audio(self._encode_clip, Job(waveform, owner))
        owner = owner or Owner(widen=False)  # the two parts are no company to each other
        base, voice = await asyncio.gather(
            self._run_audio(partial(self._encode_part, encoder.base.encode_batch), Job(waveform, owner)),
            self._run_audio(partial(self._encode_part, encoder.encode_voice), Job(waveform, owner)),
        )
        vector: np.ndarray = VoicedAudioEncoder.join(base[None], voice[None])[0].numpy()
        return vector

    async def _run_audio(self, run: Callable[[Job[np.ndarray]], Any], job: Job[np.ndarray]) -> Any:
        """`run(job)` on an audio worker, counted by the core budget from now on."""
        self.cores.queue(job)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._audio_pool, run, job)
        finally:
            self.cores.forget(job)

    async def score(self, rows: list[ContextRow]) -> np.ndarray:
        """Class probabilities (C,) of the last of these context rows."""
        return await self._submit(self.model, Job(rows))

    async def _submit(self, batcher: MicroBatcher[Job[Any], Any], job: Job[Any]) -> Any:
        self.cores.queue(job)  # counted from now: another request's call cannot take every core
        try:
            return await batcher.submit(job)
        finally:
            self.cores.forget(job)

    # ---- batch functions (run in the batchers' threads) --------------------------------------------

    def _encode_texts(self, jobs: Sequence[Job[str]]) -> list[tuple[np.ndarray, bool]]:
        encoder = self.encoders["text"]
        texts = [job.item for job in jobs]
        encode_with_info = getattr(encoder, "encode_with_info", None)
        with self.cores.lease(jobs, widen=self._widens["text"]):
            if encode_with_info is not None:
                vectors, truncated = encode_with_info(texts)
            else:
                vectors, truncated = encoder.encode_batch(texts), [False] * len(texts)
        matrix = vectors.detach().cpu().float().numpy()  # (N, Dt)
        return [(matrix[i], bool(truncated[i])) for i in range(len(texts))]

    def _encode_clip(self, job: Job[np.ndarray]) -> np.ndarray:
        """CPU, in an audio worker: one clip, one forward."""
        with self.cores.lease([job], widen=self._widens["audio"]):
            row = self.encoders["audio"].encode_batch([job.item])[0]  # (Da,)
        vector: np.ndarray = row.detach().cpu().float().numpy()
        return vector

    def _encode_part(
        self, encode: Callable[[Sequence[np.ndarray]], torch.Tensor], job: Job[np.ndarray]
    ) -> torch.Tensor:
        """CPU, in an audio worker: one part of a voiced encoder's vector, (D,), on one thread."""
        with self.cores.lease([job], widen=False):
            return encode([job.item])[0].detach().cpu()

    def _encode_audios(self, jobs: Sequence[Job[np.ndarray]]) -> list[np.ndarray]:
        """CUDA: one padded batch."""
        with self.cores.lease(jobs, widen=self._widens["audio"]):
            vectors = self.encoders["audio"].encode_batch([job.item for job in jobs])
        matrix = vectors.detach().cpu().float().numpy()  # (N, Da)
        return [matrix[i] for i in range(len(jobs))]

    def _score_jobs(self, jobs: Sequence[Job[list[ContextRow]]]) -> list[np.ndarray]:
        # LPGNet is ~2 ms at K=64 on one thread and slower on two (bench/RESULTS.md H4): never widened
        with self.cores.lease(jobs, widen=False):
            return self.score_windows([job.item for job in jobs])

    def score_windows(self, windows: Sequence[list[ContextRow]]) -> list[np.ndarray]:
        """Each context window's last-row probabilities: `model.serving`'s padding and softmax, the
        very code `lpgnet evaluate` runs, so serving = evaluation."""
        cfg = self.config
        batch = [
            ArrayWindow.from_rows(
                [(r.text, fitted_audio(r.audio, self.audio_dim, cfg.audio_dim)) for r in rows],
                cfg.text_dim,
                self.audio_dim,
            )
            for rows in windows
        ]
        return list(last_row_probabilities(self.network, batch).numpy())

    def describe(self) -> JSONDict:
        """Threads and encoders, for GET /model."""
        return {
            "torch_threads": self.torch_threads,
            "torch_threads_alone": self.cores.alone,
            "audio_workers": self.audio_workers,
            "encoders": {
                m: {
                    **e.spec.to_dict(),
                    "sample_rate": e.sample_rate,
                    "precision": getattr(e, "precision", "fp32"),  # reduced-precision encoders say so
                    "runtime": "onnxruntime" if hasattr(_network_part(e), "sessions") else _runtime(e),
                }
                for m, e in sorted(self.encoders.items())
            },
        }


def fitted_audio(vector: np.ndarray | None, width: int, network_width: int) -> np.ndarray | None:
    """A stored audio vector at the width this checkpoint's windows need. A shared store may hold vectors
    written by a replica of the previous checkpoint: one of the networks' own width (stored before a
    voice expert was added) gets the expert's part zero, so the expert stays silent on it
    (`model.voice.VoiceExpert.present`); one with an expert's part this checkpoint does not hear loses it.
    Any other width is left as it is (`ArrayWindow.from_rows` refuses it)."""
    if vector is None or len(vector) == width:
        return vector
    if len(vector) == network_width < width:
        return np.concatenate([vector, np.zeros(width - network_width, vector.dtype)])
    if len(vector) > width == network_width:
        return vector[:width]
    return vector


def _follows_lease(encoder: Encoder) -> bool:
    """Whether a call of `encoder` runs on the intra-op threads its lease sets: its forward is a torch
    module, or it holds onnxruntime sessions for several thread counts and runs the one matching the
    calling thread's torch count (`model.encoders.onnx`). A single session keeps the count it was built
    with and numpy extractors (prosody) run on one thread, so their calls never take every core (they
    would only make others wait)."""
    encoder = _network_part(encoder)  # a voice expert's extractor beside it is numpy, one thread
    return len(getattr(encoder, "sessions", ())) > 1 or _holds_torch_modules(encoder)


def _network_part(encoder: Encoder) -> Encoder:
    """The encoder of the networks' features (a voiced encoder's base: what decides threads and runtime)."""
    return encoder.base if isinstance(encoder, VoicedAudioEncoder) else encoder


def _runtime(encoder: Encoder) -> str:
    """What runs an encoder without onnxruntime sessions: torch modules, or numpy (an extractor)."""
    return "torch" if _holds_torch_modules(_network_part(encoder)) else "numpy"


def _holds_torch_modules(encoder: Encoder) -> bool:
    return any(isinstance(value, torch.nn.Module) for value in vars(encoder).values())


def _core_budget(settings: Settings, device: str) -> CoreBudget:
    """CPU: every core for a lone job, 1 thread otherwise (`torch_threads` fixes it instead); CUDA:
    torch's own count, fixed."""
    if device != "cpu":
        threads = settings.torch_threads or torch.get_num_threads()
        return CoreBudget(threads, shared=threads, adaptive=False)
    return CoreBudget(
        count_available_cpus(),
        shared=settings.torch_threads or 1,
        adaptive=settings.adaptive_threads and settings.torch_threads is None,
    )


__all__ = ["ModelWorkers"]
