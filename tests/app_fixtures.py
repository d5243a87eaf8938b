"""Fixtures of the service tests (app/): tiny checkpoints, settings, apps, audio, Redis.

Imported by tests/conftest.py with one star-import line.
"""

from __future__ import annotations

import io
import os
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.paths import SHARED_ROOT

if TYPE_CHECKING:
    from app.predictions import Prediction

# what conftest's star import brings in: the fixtures only (helpers are imported by name)
__all__ = [
    "clean_env",
    "graph_cache",
    "make_settings",
    "ravdess_clips",
    "redis_prefix",
    "redis_settings",
    "redis_url",
    "start_client",
    "store_settings",
    "tiny_checkpoint",
    "tiny_client",
    "tiny_specs",
]

RAVDESS = SHARED_ROOT / "data" / "speech" / "ravdess"
TINY_LABELS = ["angry", "happy", "neutral", "sad"]  # test data: a checkpoint's labels, read back from it
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
TEST_KEY_A = "key-a-0123456789abcdef"
TEST_KEY_B = "key-b-0123456789abcdef"


@dataclass(frozen=True)
class Clip:
    path: Path
    transcript: str
    emotion_code: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def ravdess_transcript(path: Path) -> str:
    """The exact words of a RAVDESS clip, from its file name (03-01-EE-II-SS-RR-AA.wav)."""
    return RAVDESS_STATEMENTS[path.stem.split("-")[4]]


@pytest.fixture(scope="session")
def ravdess_clips() -> list[Clip]:
    """The 8 clips of actor 01, in name order: one natural conversation."""
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS clips not found at {RAVDESS}")
    paths = sorted(RAVDESS.glob("03-01-*-01.wav"))
    if len(paths) < 8:
        pytest.skip(f"expected 8 clips of actor 01 in {RAVDESS}, found {len(paths)}")
    return [Clip(p, ravdess_transcript(p), p.stem.split("-")[2]) for p in paths[:8]]


def wav_bytes(seconds: float = 0.5, sample_rate: int = 16_000, freq: float = 220.0, seed: int = 0) -> bytes:
    """A short mono 16-bit WAV: a tone plus a little noise (different seeds, different audio)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.2 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


# ---- tiny model ---------------------------------------------------------------------------------------


# tiny_encoder_dir (the tiny encoders, written once per session) comes from tests/conftest_encoders.py


@pytest.fixture(scope="session")
def tiny_specs(tiny_encoder_dir: Path) -> dict[str, Any]:
    from model.encoders.profiles import profile_specs

    return profile_specs("tiny", device="cpu", tiny_dir=tiny_encoder_dir)


def write_tiny_checkpoint(path: Path, specs: dict[str, Any], *, seed: int = 0, **config: Any) -> Path:
    """A random causal LPGNet whose encoder specs are `specs`, saved with save_checkpoint."""
    import torch

    from model.checkpoint import Checkpoint, save_checkpoint
    from model.lpgnet import LPGNet, LPGNetConfig

    torch.manual_seed(seed)
    cfg = LPGNetConfig(
        **{
            "text_dim": specs["text"].dim,
            "audio_dim": specs["audio"].dim,
            "hidden": 16,
            "num_classes": len(TINY_LABELS),
            "heads": 2,
            "dropout": 0.0,
            "context": "causal",
            **config,
        }
    )
    model = LPGNet(cfg).eval()
    ckpt = Checkpoint(
        model=model, labels=list(TINY_LABELS), encoders=dict(specs), profile="tiny", name="lpgnet-tiny"
    )
    return save_checkpoint(ckpt, path)


def write_paired_checkpoint(tmp_path: Path, specs: dict[str, Any], context: str = "causal") -> Path:
    """A tiny checkpoint (K = 4) carrying a tiny text-only network, both of this context mode: fused.pt
    (seed 3), text.pt (seed 5) and the pair, paired.pt, in `tmp_path`."""
    from model.checkpoint import load_checkpoint, save_checkpoint, with_text_only
    from model.serving import ServingContract

    fused = load_checkpoint(write_tiny_checkpoint(tmp_path / "fused.pt", specs, seed=3, context=context))
    text = load_checkpoint(
        write_tiny_checkpoint(tmp_path / "text.pt", specs, seed=5, modalities="text", context=context)
    )
    fused.serving = text.serving = ServingContract(window=4)
    return save_checkpoint(with_text_only(fused, text), tmp_path / "paired.pt")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_specs: dict[str, Any]) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_specs)


# ---- settings and apps --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One cache of exported graphs for the run (backend auto exports each checkpoint once, and each
    encoder once: a file lock makes the other xdist worker wait rather than export it too)."""
    if worker_id == "master":  # no xdist
        return tmp_path_factory.mktemp("graph-cache")
    shared = tmp_path_factory.getbasetemp().parent / "graph-cache"  # the workers' common root
    shared.mkdir(exist_ok=True)
    return shared


def without_lpgnet_variables(mp: pytest.MonkeyPatch) -> None:
    """Hide every LPGNET_* variable of the machine (until `mp` is undone)."""
    for name in list(os.environ):
        if name.startswith("LPGNET_"):
            mp.delenv(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, graph_cache: Path) -> None:
    """For tests that build `Settings()` themselves: no LPGNET_* variable of the machine leaks in.

    Exported graphs go to the session's cache, not the user's home.
    """
    without_lpgnet_variables(monkeypatch)
    monkeypatch.setenv("LPGNET_CACHE_DIR", str(graph_cache))


@pytest.fixture(scope="session")
def make_settings(tiny_checkpoint: Path, tiny_encoder_dir: Path, graph_cache: Path) -> Callable[..., Any]:
    """The tests' one settings factory: the tiny checkpoint on CPU, in-memory store; keywords override.

    Every location is in this session's temporary directory (checkpoint, tiny encoders, graph cache), so
    no test writes into ~/.cache/lpgnet or the checkout. LPGNET_* variables of the machine are hidden
    while the settings are built (the only time they are read), so module-scoped servers use it too.
    """
    from app.settings import Settings

    defaults: dict[str, Any] = {
        "checkpoint": tiny_checkpoint,
        "tiny_dir": tiny_encoder_dir,
        "cache_dir": graph_cache,
        "device": "cpu",
        # The tiny encoders in PyTorch: ~0.5 s less per app start, over a few hundred starts. The
        # default (onnxruntime graphs) is served by every test that starts Settings() itself (the
        # shipped checkpoint) and by those that ask for encoder_backend="auto": tests/test_serving_parity.py,
        # tests/test_encoders_served.py, tests/test_routes_system.py.
        "encoder_backend": "torch",
        "batch_max_wait_ms": 0,
        "context_window": 4,
        "max_utterances_stored": 100,
    }

    def make(**overrides: Any) -> Settings:
        with pytest.MonkeyPatch.context() as mp:
            without_lpgnet_variables(mp)
            return Settings(**{**defaults, **overrides})

    return make


def wait_ready(client: TestClient, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout_s} s: {client.get('/ready').json()}")


@pytest.fixture
def start_client() -> Iterator[Callable[..., TestClient]]:
    """Start an app (lifespan included) for given settings and wait until /ready; closed at teardown."""
    from app.main import create_app

    started: list[TestClient] = []

    def start(settings: Any, *, ready: bool = True) -> TestClient:
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        started.append(client)
        if ready:
            wait_ready(client)
        return client

    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


@pytest.fixture
def tiny_client(make_settings: Callable[..., Any], start_client: Callable[..., TestClient]) -> TestClient:
    """A ready app on the tiny checkpoint with an in-memory store."""
    return start_client(make_settings())


# ---- Redis --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (REDIS_TEST_URL, default 127.0.0.1:6379): skip without one, fail in CI."""
    import redis

    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but Redis at {url} is unreachable: {exc}")
        pytest.skip(f"Redis at {url} is unreachable: {exc}")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    import redis

    prefix = f"lpgnet-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(url=redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_settings(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    """`make_settings` overrides for a Redis store under this test's own prefix (cleaned up after it)."""
    return {"redis_url": redis_url, "redis_prefix": redis_prefix}


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`make_settings` overrides for each conversation store: a test using it runs once per store.

    Empty for the in-memory store; `redis_settings` for Redis. A test narrows the list with
    `@pytest.mark.parametrize("store_settings", [...], indirect=True)`.
    """
    if request.param == "memory":
        return {}
    settings: dict[str, Any] = request.getfixturevalue("redis_settings")
    return settings


# ---- what the stores keep -----------------------------------------------------------------------------


def make_prediction(emotion: str = "angry", *, seed: int = 0) -> Prediction:
    """A prediction as the engine makes them: float32 probabilities, every stage timed."""
    from app.metrics import STAGES
    from app.predictions import Prediction

    rng = np.random.default_rng(seed)
    labels = ["angry", "happy", "neutral", "sad", "überrascht"]  # a non-ASCII label round-trips too
    raw = rng.random(len(labels)).astype(np.float32)
    return Prediction(
        emotion=emotion,
        probabilities={label: float(p) for label, p in zip(labels, raw / raw.sum(), strict=True)},
        modalities=("text", "audio"),
        transcript_truncated=seed % 2 == 1,
        context_size=seed + 1,
        model_name="lpgnet",
        model_version="3f2a9c1d0b7e",
        timings_ms={stage: round(float(rng.random()) * 100, 3) for stage in STAGES},
    )
