"""The engine with fake encoders (fast, controllable), and its start-up checks on the tiny profile."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import torch

from app.engine import Engine
from app.exceptions import UnsupportedModality, UtteranceConflict, UtteranceInProgress
from app.metrics import STAGES, Metrics
from app.runtime import StartupError, build_network
from app.schemas import Timings
from app.settings import Settings
from app.store import ConversationKey, MemoryStore, build_store
from app.store.base import ContextRow, NewUtterance, UtteranceMeta
from app.utterances import ScoredUtterance, UtteranceRequest
from model.checkpoint import Checkpoint
from model.encoders.audio import AudioTooLongError
from model.encoders.base import EncoderSpec
from model.export import LAST_ROW_SUFFIX
from model.lpgnet import LPGNet, LPGNetConfig
from tests.app_fixtures import TINY_LABELS, wav_bytes, write_tiny_checkpoint

TEXT_SPEC = EncoderSpec("fake-text", "1", 6, "text")
AUDIO_SPEC = EncoderSpec("fake-audio", "1", 3, "audio")
KEY = ConversationKey("", "conv")


class FakeText:
    spec = TEXT_SPEC
    sample_rate = None

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        self.batches.append(len(items))
        return torch.stack(
            [torch.tensor([len(t), t.count("!"), t.count(" "), ord(t[0]) / 100, 1.0, -1.0]) for t in items]
        )


class FakeAudio:
    spec = AUDIO_SPEC
    sample_rate = 8_000

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        self.lengths += [len(w) for w in items]
        return torch.tensor([[float(np.abs(w).mean()), float(w.std()), len(w) / 8000] for w in items])


def fake_checkpoint(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    cfg = LPGNetConfig(
        text_dim=6, audio_dim=3, hidden=8, num_classes=4, heads=2, dropout=0.0, context="causal"
    )
    return Checkpoint(
        model=LPGNet(cfg).eval(),
        labels=list(TINY_LABELS),
        encoders={"text": TEXT_SPEC, "audio": AUDIO_SPEC},
        profile="fake",
        name="fake",
        version="v0",
    )


@pytest_asyncio.fixture
async def make_engine(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Build engines on fake encoders; they are closed after the test."""
    engines: list[Engine] = []

    async def make(encoders: dict[str, Any] | None = None, **overrides: Any) -> Engine:
        device = overrides.pop("engine_device", "cpu")
        settings = make_settings(
            **{
                "backend": "torch",  # the ONNX paths are tested on saved checkpoints below
                "context_window": 3,
                "idempotency_wait_ms": 200,
                **overrides,
            }
        )
        ckpt = fake_checkpoint()
        store = MemoryStore(
            ttl_s=60, max_conversations=100, max_utterances=100, vectors_kept=settings.vectors_kept
        )
        engine = Engine(
            checkpoint=ckpt,
            encoders=encoders if encoders is not None else {"text": FakeText(), "audio": FakeAudio()},
            network=build_network(settings, ckpt, torch.device("cpu"))[0],
            store=store,
            settings=settings,
            metrics=Metrics(),
            device=device,
        )
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


@pytest.mark.asyncio
async def test_probabilities_come_from_the_last_row_of_a_causal_run(make_engine: Any) -> None:
    engine = await make_engine(context_window=8)
    texts = ["hi there", "no!", "why not", "stop it!!"]
    answers = [await engine.submit(UtteranceRequest(KEY, transcript=t)) for t in texts]
    vectors = engine.encoders["text"].encode_batch(texts).half().float()[None]  # (1, U, 6)
    logits = engine.checkpoint.model(
        vectors, torch.zeros(1, 4, 3), torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)
    ).logits[0]
    expected = torch.softmax(logits.double(), -1).detach()
    for i, answer in enumerate(answers):
        assert answer.index == i
        got = list(answer.prediction.probabilities.values())
        np.testing.assert_allclose(got, expected[i].numpy(), atol=1e-6)
        assert answer.prediction.emotion == TINY_LABELS[int(expected[i].argmax())]


@pytest.mark.asyncio
async def test_model_sees_only_the_last_k_utterances(make_engine: Any) -> None:
    engine = await make_engine(context_window=2)
    texts = ["a b", "c!", "d e f", "g"]
    answers = [await engine.submit(UtteranceRequest(KEY, transcript=t)) for t in texts]
    assert [a.prediction.context_size for a in answers] == [1, 2, 2, 2]
    # the last answer equals a fresh conversation holding only the last two utterances
    other = ConversationKey("", "other")
    await engine.submit(UtteranceRequest(other, transcript=texts[2]))
    alone = await engine.submit(UtteranceRequest(other, transcript=texts[3]))
    assert alone.prediction.probabilities == pytest.approx(answers[3].prediction.probabilities, abs=1e-9)


def test_the_stages_timed_are_the_ones_the_response_documents() -> None:
    # one list of names: the engine's timing keys, the stage histogram's labels, the response's fields
    assert tuple(Timings.model_fields) == STAGES


@pytest.mark.asyncio
async def test_audio_is_resampled_to_the_encoders_rate(make_engine: Any) -> None:
    audio = FakeAudio()
    engine = await make_engine({"text": FakeText(), "audio": audio})
    answer = await engine.submit(UtteranceRequest(KEY, audio=wav_bytes(seconds=0.5, sample_rate=44_100)))
    assert answer.prediction.modalities == ("audio",)
    assert audio.lengths[-1] == 4000  # 0.5 s at 8 kHz


@pytest.mark.asyncio
async def test_audio_longer_than_the_limit_is_refused_before_encoding(make_engine: Any) -> None:
    audio = FakeAudio()
    engine = await make_engine({"text": FakeText(), "audio": audio}, max_audio_seconds=0.25)
    n = len(audio.lengths)
    with pytest.raises(AudioTooLongError):
        await engine.submit(UtteranceRequest(KEY, audio=wav_bytes(seconds=0.5)))
    assert len(audio.lengths) == n
    assert await engine.store.conversation(KEY) is None


@pytest.mark.asyncio
async def test_request_with_only_unused_modalities_is_refused(make_engine: Any) -> None:
    engine = await make_engine({"text": FakeText()})
    with pytest.raises(UnsupportedModality):
        await engine.submit(UtteranceRequest(KEY, audio=wav_bytes()))
    answer = await engine.submit(UtteranceRequest(KEY, transcript="hello", audio=wav_bytes()))
    assert answer.prediction.modalities == ("text",)


@pytest.mark.asyncio
async def test_concurrent_requests_share_encoder_batches(make_engine: Any) -> None:
    text = FakeText()
    engine = await make_engine({"text": text, "audio": FakeAudio()}, batch_max_wait_ms=50, batch_max_size=8)
    keys = [ConversationKey("", f"c{i}") for i in range(8)]
    answers = await asyncio.gather(
        *(engine.submit(UtteranceRequest(k, transcript=f"line {i}")) for i, k in enumerate(keys))
    )
    assert all(a.index == 0 for a in answers)
    assert max(text.batches) > 1 and sum(text.batches) == 8


class ThreadedAudio(FakeAudio):
    """FakeAudio that records which thread ran each call and holds it briefly, so calls overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, str]] = []

    def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        self.calls.append((len(items), threading.current_thread().name))
        time.sleep(0.05)
        return super().encode_batch(items)


async def _audio_burst(engine: Engine, n: int) -> list[Any]:
    requests = [
        UtteranceRequest(
            ConversationKey("", f"c{i}"), audio=wav_bytes(seconds=0.1 * (i + 1), sample_rate=8_000)
        )
        for i in range(n)
    ]
    return await asyncio.gather(*(engine.submit(r) for r in requests))


@pytest.mark.asyncio
async def test_on_cpu_a_batch_of_clips_fans_out_one_clip_per_worker(make_engine: Any) -> None:
    audio = ThreadedAudio()
    engine = await make_engine({"audio": audio}, encoder_workers=2, batch_max_wait_ms=100, batch_max_size=8)
    answers = await _audio_burst(engine, 6)
    assert all(size == 1 for size, _ in audio.calls) and len(audio.calls) == 6
    assert len({name for _, name in audio.calls if name.startswith("lpgnet-audio-worker")}) == 2
    # each answer holds its own clip's vector: the duration feature is 0.1 * (i + 1) s
    for i, answer in enumerate(answers):
        row = await engine.store.window(ConversationKey("", f"c{i}"), answer.index, 1)
        assert row[0].audio is not None and float(row[0].audio[2]) == pytest.approx(0.1 * (i + 1), abs=1e-3)


@pytest.mark.asyncio
async def test_on_cpu_a_clip_does_not_wait_for_a_clip_that_started_before_it(make_engine: Any) -> None:
    """Each clip goes to the first free worker as it arrives, not in batches that wait for their slowest."""
    started, release = threading.Event(), threading.Event()

    class HeldLongClips(FakeAudio):
        def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
            if len(items[0]) >= 8_000:  # the 1 s clip holds its worker until released
                started.set()
                release.wait(10)
            return super().encode_batch(items)

    engine = await make_engine({"audio": HeldLongClips()}, encoder_workers=2)
    clip = {name: wav_bytes(seconds=s, sample_rate=8_000) for name, s in (("long", 1.0), ("short", 0.2))}
    held = asyncio.create_task(
        engine.submit(UtteranceRequest(ConversationKey("", "long"), audio=clip["long"]))
    )
    try:
        assert await asyncio.to_thread(started.wait, 10)
        short = UtteranceRequest(ConversationKey("", "short"), audio=clip["short"])
        assert (await asyncio.wait_for(engine.submit(short), 10)).index == 0
        assert not held.done()
    finally:
        release.set()
    assert (await held).index == 0


@pytest.mark.asyncio
async def test_on_cpu_with_one_worker_clips_are_still_encoded_one_per_forward(make_engine: Any) -> None:
    audio = ThreadedAudio()
    engine = await make_engine({"audio": audio}, encoder_workers=1, batch_max_wait_ms=100, batch_max_size=8)
    await _audio_burst(engine, 4)
    assert [size for size, _ in audio.calls] == [1, 1, 1, 1]
    assert {name for _, name in audio.calls} == {"lpgnet-audio-worker_0"}
    assert engine.describe()["audio_workers"] == 1


@pytest.mark.asyncio
async def test_on_cuda_a_batch_of_clips_is_one_padded_batch(make_engine: Any) -> None:
    audio = ThreadedAudio()
    engine = await make_engine(
        {"audio": audio}, engine_device="cuda", batch_max_wait_ms=100, batch_max_size=8
    )
    await _audio_burst(engine, 6)
    assert max(size for size, _ in audio.calls) > 1 and sum(size for size, _ in audio.calls) == 6


@pytest.mark.asyncio
async def test_lone_request_is_not_delayed_when_max_wait_is_zero(make_engine: Any) -> None:
    engine = await make_engine(batch_max_wait_ms=0)
    await engine.submit(UtteranceRequest(KEY, transcript="warm"))
    started = time.perf_counter()
    await engine.submit(UtteranceRequest(KEY, transcript="hello"))
    assert time.perf_counter() - started < 0.5


@pytest.mark.asyncio
async def test_retry_gets_the_stored_answer_without_encoding_again(make_engine: Any) -> None:
    text = FakeText()
    engine = await make_engine({"text": text, "audio": FakeAudio()})
    first = await engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1"))
    encoded = sum(text.batches)
    again = await engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1"))
    assert again.replayed and not first.replayed
    assert again.prediction == first.prediction and again.index == first.index
    assert sum(text.batches) == encoded
    with pytest.raises(UtteranceConflict):
        await engine.submit(
            UtteranceRequest(KEY, transcript="hello", utterance_id="u1", speaker="someone else")
        )


@pytest.mark.asyncio
async def test_concurrent_attempts_of_one_utterance_store_it_once(make_engine: Any) -> None:
    engine = await make_engine(batch_max_wait_ms=20)
    attempts = await asyncio.gather(
        *(engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1")) for _ in range(4))
    )
    assert {a.index for a in attempts} == {0}
    assert len({tuple(a.prediction.probabilities.items()) for a in attempts}) == 1
    conversation = await engine.store.conversation(KEY)
    assert conversation is not None and conversation.utterance_count == 1


SLOW = UtteranceRequest(KEY, transcript="slow", utterance_id="u1")  # a first attempt, and its retries


async def first_attempt_held_at_the_network(
    engine: Engine,
) -> tuple[asyncio.Task[ScoredUtterance], threading.Event]:
    """Submit SLOW with the network held shut. Returns the first attempt's task and the gate, once the
    utterance is stored: its prediction waits until the gate is set."""
    model_gate = threading.Event()
    network = engine.workers.network
    engine.workers.network = lambda *a: (model_gate.wait(10), network(*a))[1]  # type: ignore[method-assign]
    first = asyncio.create_task(engine.submit(SLOW))
    while await engine.store.find(KEY, "u1") is None:
        await asyncio.sleep(0.005)
    return first, model_gate


@pytest.mark.asyncio
async def test_retry_while_the_first_attempt_is_in_flight_is_409_in_progress(make_engine: Any) -> None:
    engine = await make_engine(idempotency_wait_ms=100)
    first, model_gate = await first_attempt_held_at_the_network(engine)
    with pytest.raises(UtteranceInProgress):
        await engine.submit(SLOW)
    model_gate.set()
    done = await first
    again = await engine.submit(SLOW)
    assert again.replayed and again.prediction == done.prediction


@pytest.mark.asyncio
async def test_retry_waits_briefly_for_the_first_attempts_answer(make_engine: Any) -> None:
    engine = await make_engine(idempotency_wait_ms=5000)
    first, model_gate = await first_attempt_held_at_the_network(engine)
    retry = asyncio.create_task(engine.submit(SLOW))
    await asyncio.sleep(0.05)
    model_gate.set()
    done, again = await first, await retry
    assert again.replayed and again.prediction == done.prediction


@pytest.mark.asyncio
async def test_retry_at_once_scores_an_utterance_whose_first_attempt_failed_here(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(idempotency_wait_ms=60_000)  # no waiting for an answer known not to come
    original_set = engine.store.set_prediction

    async def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the store failed between append and prediction")

    monkeypatch.setattr(engine.store, "set_prediction", crash)
    with pytest.raises(RuntimeError):
        await engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1"))
    monkeypatch.setattr(engine.store, "set_prediction", original_set)
    answer = await asyncio.wait_for(
        engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1")), timeout=10
    )
    assert answer.index == 0 and answer.prediction.emotion in TINY_LABELS and not answer.replayed
    stored = await engine.store.get(KEY, 0)
    assert stored is not None and stored.prediction == answer.prediction
    again = await engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1"))
    assert again.replayed and again.prediction == answer.prediction


@pytest.mark.asyncio
async def test_retry_scores_an_utterance_left_unanswered_elsewhere_after_the_idempotency_wait(
    make_engine: Any,
) -> None:
    """Stored by an attempt this process does not know (another replica's, which died): no 409 loop."""
    engine = await make_engine(idempotency_wait_ms=50)
    first = await engine.submit(UtteranceRequest(KEY, transcript="before", utterance_id="u0"))
    orphan = await engine.store.append(
        KEY,
        NewUtterance(
            UtteranceMeta(
                token="other-replica",
                utterance_id="u1",
                content_hash=UtteranceRequest(KEY, transcript="hello").content_hash(),
                created_at=0.0,
                modalities=("text",),
            ),
            np.zeros(engine.checkpoint.config.text_dim, np.float32),
            None,
        ),
    )
    assert orphan.created and first.index == 0
    answer = await engine.submit(UtteranceRequest(KEY, transcript="hello", utterance_id="u1"))
    assert answer.index == 1 and answer.prediction.context_size == 2


@pytest.mark.asyncio
async def test_warm_up_marks_the_engine_ready(make_engine: Any) -> None:
    engine = await make_engine()
    assert not engine.ready
    await engine.warm_up()
    assert engine.ready
    assert await engine.store.conversation(KEY) is None  # warm-up touches no conversation


# ---- start-up checks on the real tiny profile ---------------------------------------------------------


def test_load_refuses_encoders_that_do_not_match_the_checkpoint(
    make_settings: Callable[..., Settings], tiny_specs: dict[str, Any], tmp_path: Path
) -> None:
    wrong = {**tiny_specs, "text": dataclasses.replace(tiny_specs["text"], version="other-weights")}
    path = write_tiny_checkpoint(tmp_path / "wrong.pt", wrong)
    settings = make_settings(checkpoint=path)
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=2)
    with pytest.raises(StartupError) as info:
        Engine.load(settings, store, Metrics())
    message = str(info.value)
    assert "other-weights" in message and tiny_specs["text"].version in message


def test_load_refuses_an_in_memory_store_too_small_for_one_conversation(
    make_settings: Callable[..., Settings],
) -> None:
    """1,000 utterances at the longest the API accepts need more than 1 MiB: start-up says so, with the
    size that would do; that size starts."""
    settings = make_settings(backend="torch", max_store_bytes=1024**2, max_utterances_stored=1000)
    with pytest.raises(StartupError, match="LPGNET_MAX_STORE_BYTES=1048576 cannot hold") as info:
        Engine.load(settings, build_store(settings), Metrics())
    needed = int(str(info.value).split("at least ")[1].split()[0])
    roomy = make_settings(backend="torch", max_store_bytes=needed, max_utterances_stored=1000)
    assert Engine.load(roomy, build_store(roomy), Metrics()).ready is False  # loaded, not yet warmed up


def test_load_refuses_a_missing_checkpoint(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=2)
    with pytest.raises(StartupError, match="LPGNET_CHECKPOINT"):
        Engine.load(make_settings(checkpoint=tmp_path / "missing.pt"), store, Metrics())


class TimedCalls:
    """Encoders that record, per call, which modality ran, torch's thread count, the thread and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, float, float]] = []
        self._lock = threading.Lock()

    def record(self, modality: str, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        started = time.perf_counter()
        time.sleep(0.02)  # long enough for calls to overlap if they are allowed to
        out = run()
        with self._lock:
            self.calls.append(
                (
                    modality,
                    torch.get_num_threads(),
                    threading.current_thread().name,
                    started,
                    time.perf_counter(),
                )
            )
        return out

    def encoders(self, torch_forward: Collection[str] = ("text", "audio")) -> dict[str, Any]:
        """Those named in `torch_forward` hold a torch module, as the BERT and emotion2vec adapters do
        (their calls may take every core); the others stand for onnxruntime or numpy extractors."""
        calls = self

        class Text(FakeText):
            def __init__(self) -> None:
                super().__init__()
                if "text" in torch_forward:
                    self.pooler = torch.nn.Identity()

            def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
                return calls.record("text", lambda: FakeText.encode_batch(self, items))

        class Audio(FakeAudio):
            def __init__(self) -> None:
                super().__init__()
                if "audio" in torch_forward:
                    self.pooler = torch.nn.Identity()

            def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
                return calls.record("audio", lambda: FakeAudio.encode_batch(self, items))

        return {"text": Text(), "audio": Audio()}


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch, restore_torch_threads: None) -> int:
    """The engine sees 4 CPUs whatever the machine has (a thread count is only a number to torch)."""
    import app.workers

    monkeypatch.setattr(app.workers, "count_available_cpus", lambda: 4)
    return 4


def _request(i: int, *, text: bool = True) -> UtteranceRequest:
    return UtteranceRequest(
        ConversationKey("", f"c{i}"),
        transcript=f"utterance {i}" if text else None,
        audio=wav_bytes(seconds=0.1 + 0.05 * i, sample_rate=8_000),
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("settings", "expected"), [({}, 4), ({"adaptive_threads": False}, 1), ({"torch_threads": 2}, 2)]
)
async def test_a_lone_request_encodes_on_every_core_unless_told_otherwise(
    make_engine: Any, four_cpus: int, settings: dict[str, Any], expected: int
) -> None:
    recorder = TimedCalls()
    torch.set_num_threads(3)  # the process default must not leak into the model threads
    engine = await make_engine(recorder.encoders(), **settings)
    await engine.submit(_request(0))
    assert sorted((m, n) for m, n, *_ in recorder.calls) == [("audio", expected), ("text", expected)]
    described = engine.describe()
    assert described["torch_threads_alone"] == expected
    assert described["torch_threads"] == settings.get("torch_threads", 1)


@pytest.mark.asyncio
async def test_a_lone_request_runs_text_and_audio_one_after_the_other_on_every_core(
    make_engine: Any, four_cpus: int
) -> None:
    recorder = TimedCalls()
    engine = await make_engine(recorder.encoders())
    for i in range(3):  # one request at a time
        await engine.submit(_request(i))
    assert len(recorder.calls) == 6 and {n for _, n, *_ in recorder.calls} == {4}
    _assert_wide_calls_ran_alone(recorder.calls)


@pytest.mark.asyncio
async def test_under_load_no_call_on_every_core_runs_beside_another(make_engine: Any, four_cpus: int) -> None:
    """Concurrent requests: calls run side by side on one thread each, and a call that took every core
    (when it happened to be the only work) had them to itself: the cores are never oversubscribed."""
    recorder = TimedCalls()
    engine = await make_engine(recorder.encoders(), encoder_workers=2, batch_max_size=4)
    answers = await asyncio.gather(*(engine.submit(_request(i, text=i % 2 == 0)) for i in range(8)))
    assert len(answers) == 8 and {n for _, n, *_ in recorder.calls} <= {1, 4}
    assert any(n == 1 for _, n, *_ in recorder.calls)  # 8 requests at once: some calls had company
    _assert_wide_calls_ran_alone(recorder.calls)


@pytest.mark.asyncio
async def test_encoders_without_a_torch_forward_never_take_every_core(
    make_engine: Any, four_cpus: int
) -> None:
    """onnxruntime sessions and numpy extractors cannot use the threads: a lone request's two calls then
    run side by side on one thread each rather than one waiting for the other."""
    recorder = TimedCalls()
    engine = await make_engine(recorder.encoders(torch_forward=()))
    await engine.submit(_request(0))
    assert sorted((m, n) for m, n, *_ in recorder.calls) == [("audio", 1), ("text", 1)]


@pytest.mark.asyncio
async def test_a_lone_request_with_one_encoder_that_cannot_widen_runs_both_on_one_thread(
    make_engine: Any, four_cpus: int
) -> None:
    """The offline profile's shape (MiniLM in torch, prosody in numpy): side by side beats one after the
    other, so the torch encoder does not take every core either; a text-only request still does."""
    recorder = TimedCalls()
    engine = await make_engine(recorder.encoders(torch_forward=("text",)))
    await engine.submit(_request(0))
    assert sorted((m, n) for m, n, *_ in recorder.calls) == [("audio", 1), ("text", 1)]
    await engine.submit(UtteranceRequest(KEY, transcript="words only"))
    assert recorder.calls[-1][:2] == ("text", 4)


@pytest.mark.asyncio
@pytest.mark.parametrize("torch_base", [False, True])
async def test_a_voiced_encoders_parts_run_side_by_side_unless_its_network_part_takes_every_core(
    make_settings: Callable[..., Settings], four_cpus: int, torch_base: bool
) -> None:
    """The default weights' audio (prosody, then a voice expert's eGeMAPS, both one-thread extractors):
    the two parts run as two jobs at once on the audio workers and give the vector `encode_batch` gives.
    A network part that takes every core when alone (torch, onnxruntime) runs first, the voice after it."""
    from app.workers import ModelWorkers
    from model.encoders.voiced import VoicedAudioEncoder

    recorder = TimedCalls()
    base = recorder.encoders(torch_forward=("audio",) if torch_base else ())["audio"]

    class Voice(FakeAudio):
        spec = EncoderSpec(name="fake-voice", version="1", dim=3, modality="audio")
        sample_rate = 4_000

        def encode_batch(self, items: Sequence[np.ndarray]) -> torch.Tensor:
            return recorder.record("voice", lambda: FakeAudio.encode_batch(self, items))

    encoder = VoicedAudioEncoder(base, Voice())
    settings = make_settings(encoder_workers=2)
    network = fake_checkpoint().model  # never called: only audio is encoded
    workers = ModelWorkers({"audio": encoder}, network, network.cfg, settings, Metrics(), "cpu")
    workers.start()
    try:
        wave = np.sin(np.arange(8_000, dtype=np.float32) / 7.0)
        vector = await workers.encode_audio(wave)
    finally:
        await workers.close()
    (audio,) = [c for c in recorder.calls if c[0] == "audio"]
    (voice,) = [c for c in recorder.calls if c[0] == "voice"]
    np.testing.assert_array_equal(vector, encoder.encode_batch([wave])[0].numpy())
    if torch_base:  # every core for the network part, then the voice in the same job
        assert audio[1] == 4 and audio[2] == voice[2] and audio[4] <= voice[3]
    else:  # one thread each, on two workers, at the same time
        assert (audio[1], voice[1]) == (1, 1) and audio[2] != voice[2]
        assert audio[3] < voice[4] and voice[3] < audio[4]


def _assert_wide_calls_ran_alone(calls: list[tuple[str, int, str, float, float]]) -> None:
    for modality, threads, _, start, end in calls:
        if threads > 1:
            beside = [c for c in calls if c[3] < end and start < c[4] and c[3:] != (start, end)]
            assert not beside, f"{modality} on {threads} threads overlapped {beside}"


@pytest.mark.asyncio
async def test_audio_is_decoded_off_the_event_loop(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.workers

    threads: list[str] = []
    decode = app.workers.decode_upload

    def recording(*args: Any) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return decode(*args)

    monkeypatch.setattr(app.workers, "decode_upload", recording)
    engine = await make_engine()
    await engine.submit(_request(0))
    assert len(threads) == 1 and threads[0].startswith("lpgnet-decode")


def _assert_same_answers(engine: Engine, reference: Engine) -> None:
    rng = np.random.default_rng(0)
    cfg = engine.checkpoint.config
    windows = [
        [ContextRow(j, rng.standard_normal(cfg.text_dim).astype(np.float16), None) for j in range(n)]
        for n in (1, 3)
    ]
    got = engine.workers.score_windows(windows)
    for row, want in zip(got, reference.workers.score_windows(windows), strict=True):
        np.testing.assert_allclose(row, want, atol=1e-5)


def _last_row_last(graph: Path) -> tuple[bool, str]:
    return graph.stem.endswith(LAST_ROW_SUFFIX), graph.name


@pytest.mark.slow
def test_auto_backend_serves_an_exported_graph_once_per_checkpoint(
    make_settings: Callable[..., Settings],
    tiny_specs: dict[str, Any],
    tmp_path: Path,
    restore_torch_threads: None,
) -> None:
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    cache = tmp_path / "cache"
    engine = Engine.load(make_settings(cache_dir=cache, encoder_backend="torch"), store, Metrics())
    assert engine.backend == "onnx" and engine.describe()["backend"] == "onnx"
    graphs = sorted(cache.glob("*.onnx"), key=_last_row_last)  # the network's, then its last-row pass's
    assert [g.stem.endswith(LAST_ROW_SUFFIX) for g in graphs] == [False, True]
    stamps = [g.stat().st_mtime_ns for g in graphs]
    again = Engine.load(make_settings(cache_dir=cache, encoder_backend="torch"), store, Metrics())
    again_graphs = sorted(cache.glob("*.onnx"), key=_last_row_last)
    assert again.backend == "onnx" and [g.stat().st_mtime_ns for g in again_graphs] == stamps
    _assert_same_answers(engine, Engine.load(make_settings(backend="torch"), store, Metrics()))
    # another checkpoint in the same cache gets a graph of its own and answers like its own weights
    other = write_tiny_checkpoint(tmp_path / "other.pt", tiny_specs, seed=7)
    other_engine = Engine.load(
        make_settings(checkpoint=other, cache_dir=cache, encoder_backend="torch"), store, Metrics()
    )
    assert other_engine.backend == "onnx" and len(list(cache.glob("*.onnx"))) == 4
    _assert_same_answers(
        other_engine, Engine.load(make_settings(checkpoint=other, backend="torch"), store, Metrics())
    )


@pytest.mark.slow
def test_auto_backend_exports_again_over_a_cached_graph_that_changed(
    make_settings: Callable[..., Settings],
    tiny_specs: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    restore_torch_threads: None,
) -> None:
    from model.checkpoint import load_checkpoint
    from model.export import export_lpgnet

    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    cache = tmp_path / "cache"
    Engine.load(make_settings(cache_dir=cache, encoder_backend="torch"), store, Metrics())
    (graph,) = (g for g in cache.glob("*.onnx") if not g.stem.endswith(LAST_ROW_SUFFIX))
    other = load_checkpoint(write_tiny_checkpoint(tmp_path / "other.pt", tiny_specs, seed=7))
    export_lpgnet(other.model, graph)  # the cached file now holds another model's graph
    engine = Engine.load(make_settings(cache_dir=cache, encoder_backend="torch"), store, Metrics())
    assert "differ from PyTorch" in caplog.text and engine.backend == "onnx"
    assert graph.stat().st_mode & 0o777 == 0o644  # readable by other users of a shared cache
    _assert_same_answers(engine, Engine.load(make_settings(backend="torch"), store, Metrics()))


def test_auto_backend_falls_back_to_torch_when_export_fails(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restore_torch_threads: None,
) -> None:
    import model.export

    def broken(model: Any, path: Path, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"half a graph")  # the exporter dies after writing part of the file
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(model.export, "export_lpgnet", broken)
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    engine = Engine.load(
        make_settings(cache_dir=tmp_path / "cache", encoder_backend="torch"), store, Metrics()
    )
    assert engine.backend == "torch" and "exporter exploded" in caplog.text
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written left behind


def test_a_named_graph_that_is_missing_is_a_startup_error_under_auto_too(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    with pytest.raises(StartupError, match="LPGNET_ONNX_MODEL"):
        Engine.load(make_settings(onnx_model=tmp_path / "typo.onnx"), store, Metrics())


def test_onnx_backend_refuses_a_graph_of_another_checkpoint(
    make_settings: Callable[..., Settings], tiny_specs: dict[str, Any], tmp_path: Path
) -> None:
    from model.checkpoint import load_checkpoint
    from model.export import export_lpgnet

    other = load_checkpoint(write_tiny_checkpoint(tmp_path / "other.pt", tiny_specs, seed=7))
    graph = export_lpgnet(other.model, tmp_path / "other.onnx")
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=8)
    with pytest.raises(StartupError, match="does not serve"):
        Engine.load(make_settings(backend="onnx", onnx_model=graph), store, Metrics())


def test_onnx_backend_without_a_graph_fails_with_a_clear_message(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    store = MemoryStore(ttl_s=1, max_conversations=1, max_utterances=10, vectors_kept=2)
    with pytest.raises(StartupError, match="no ONNX graph"):
        Engine.load(make_settings(backend="onnx", onnx_model=tmp_path / "none.onnx"), store, Metrics())


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    """Model threads set torch's thread count, which also moves the process default; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
