"""The threads that run model code for the engine, so that none of it runs on the event loop.

    decode  `decode_workers` threads: uploads decoded and resampled to the audio encoder's rate
    text    a micro-batcher over the text encoder
    audio   a micro-batcher over the audio encoder; on CPU its batch fans out one clip per forward over
            `encoder_workers` threads (emotion2vec is compute-bound at batch 1 and a padded batch of 8
            costs ~26% more per clip, bench/RESULTS.md); on CUDA one padded batch
    model   a micro-batcher over LPGNet: context windows of <= K utterances, padded, last row's softmax

Every model thread sets its own torch intra-op thread count before it runs anything (per thread, never
process-wide): on CPU 1 unless `torch_threads` says otherwise, since the three batchers and the audio
workers run side by side and 2-thread OpenMP teams on 2 cores turn every barrier into a scheduler wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from app.batching import MicroBatcher
from app.metrics import Metrics
from app.settings import Settings
from app.store.base import ContextRow, JSONDict
from app.utterances import decode_upload, tone_wav
from model.encoders.base import Encoder
from model.encoders.devices import count_available_cpus
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
        self.settings = settings
        # torch's thread count is per thread once a thread has used it: every thread that runs model
        # code sets its own, so whatever else the process does (a benchmark's baseline) cannot change
        # it. Setting it also changes the default of threads that have not used torch yet.
        self.torch_threads = settings.torch_threads or (1 if device == "cpu" else torch.get_num_threads())

        def batcher(name: str, run: Callable[[Sequence[Any]], Sequence[Any]]) -> MicroBatcher[Any, Any]:
            return MicroBatcher(
                name,
                run,
                max_size=settings.batch_max_size,
                max_wait_s=settings.batch_max_wait_ms / 1000.0,
                on_batch=metrics.batch_observer(name),
                thread_init=self.init_thread,
            )

        self.text = batcher("text", self.encode_texts) if "text" in encoders else None
        self.audio = batcher("audio", self.encode_audios) if "audio" in encoders else None
        self.model = batcher("model", self.score_windows)
        self._decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="lpgnet-decode")
        self.audio_workers = (settings.encoder_workers or count_available_cpus()) if device == "cpu" else 0
        self._audio_pool = (
            ThreadPoolExecutor(
                self.audio_workers, thread_name_prefix="lpgnet-audio-worker", initializer=self.init_thread
            )
            if self.audio_workers > 1 and "audio" in encoders
            else None
        )

    def init_thread(self) -> None:
        """Runs first in every model thread."""
        torch.set_num_threads(self.torch_threads)

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
            await self.text.submit("Warming up.")
        if self.audio is not None:
            waveform = await self.decode(tone_wav(seconds=1.0))
            # as many clips as workers, so every worker thread has run once before the first burst
            await asyncio.gather(*(self.audio.submit(waveform) for _ in range(max(1, self.audio_workers))))
        cfg = self.config
        for length in sorted({1, self.settings.context_window}):
            row = (np.zeros(cfg.text_dim, np.float16), np.zeros(cfg.audio_dim, np.float16))
            await self.model.submit([ContextRow(i, *row) for i in range(length)])

    async def decode(self, data: bytes) -> np.ndarray:
        """An uploaded file as a mono waveform at the audio encoder's rate (typed errors become 4xx)."""
        encoder = self.encoders["audio"]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._decode_pool, decode_upload, data, self.settings, encoder.sample_rate
        )

    # ---- batch functions (run in the batchers' threads) --------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> list[tuple[np.ndarray, bool]]:
        encoder = self.encoders["text"]
        encode_with_info = getattr(encoder, "encode_with_info", None)
        if encode_with_info is not None:
            vectors, truncated = encode_with_info(list(texts))
        else:
            vectors, truncated = encoder.encode_batch(list(texts)), [False] * len(texts)
        matrix = vectors.detach().cpu().float().numpy()  # (N, Dt)
        return [(matrix[i], bool(truncated[i])) for i in range(len(texts))]

    def encode_audios(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        encoder = self.encoders["audio"]

        def one(waveform: np.ndarray) -> np.ndarray:
            vector: np.ndarray = encoder.encode_batch([waveform])[0].detach().cpu().float().numpy()
            return vector

        if self.audio_workers:  # CPU: one clip per forward, across the workers
            if self._audio_pool is not None and len(waveforms) > 1:
                return list(self._audio_pool.map(one, waveforms))
            return [one(w) for w in waveforms]
        vectors = encoder.encode_batch(list(waveforms))
        matrix = vectors.detach().cpu().float().numpy()  # (N, Da)
        return [matrix[i] for i in range(len(waveforms))]

    def score_windows(self, windows: Sequence[list[ContextRow]]) -> list[np.ndarray]:
        """Each context window's last-row probabilities: `model.serving`'s padding and softmax, the
        very code `lpgnet evaluate` runs, so serving = evaluation."""
        cfg = self.config
        batch = [
            ArrayWindow.from_rows([(r.text, r.audio) for r in rows], cfg.text_dim, cfg.audio_dim)
            for rows in windows
        ]
        return list(last_row_probabilities(self.network, batch).numpy())

    def describe(self) -> JSONDict:
        """Threads and encoders, for GET /model."""
        return {
            "torch_threads": self.torch_threads,
            "audio_workers": self.audio_workers,
            "encoders": {
                m: {
                    **e.spec.to_dict(),
                    "sample_rate": e.sample_rate,
                    "precision": getattr(e, "precision", "fp32"),  # reduced-precision encoders say so
                }
                for m, e in sorted(self.encoders.items())
            },
        }


__all__ = ["ModelWorkers"]
