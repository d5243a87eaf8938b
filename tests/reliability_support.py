"""Helpers of the reliability tests (tests/test_reliability_*.py): problem checks, apps driven by an
asyncio client, real uvicorn servers on loopback, and a private redis-server that a test may kill.

Everything listens on 127.0.0.1 only, on ports the OS hands out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from model.paths import REPO_ROOT

PROBLEM_KEYS = {"type", "title", "status", "detail"}
# What an error body must never show: tracebacks, paths of this machine, library internals.
INTERNALS = ("Traceback", 'File "', str(REPO_ROOT), "site-packages", "/tmp/", "soundfile", "torch.")


def assert_problem(response: httpx.Response, status: int, *, slug: str | None = None) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with this status, a request id and nothing internal."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert body["request_id"] == response.headers["x-request-id"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body["type"]
    for marker in INTERNALS:
        assert marker not in response.text, f"{marker!r} leaked into {response.text}"
    return body


def audio_file(samples: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """(S,) or (S, C) samples as an encoded file in memory."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, sample_rate: int, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    """(S, C) sines, another frequency per channel."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.stack([amplitude * np.sin(2 * np.pi * (220 + 70 * c) * t) for c in range(channels)], axis=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# ---- apps driven by an asyncio client (ASGI, in process) ----------------------------------------------


@contextlib.asynccontextmanager
async def asgi_client(app: Any, *, ready_timeout_s: float = 120.0) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an httpx client on it once /ready says 200."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            deadline = time.monotonic() + ready_timeout_s
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "app not ready"
                await asyncio.sleep(0.02)
            yield client


# ---- a real server on loopback, in a thread of this process ------------------------------------------


@contextlib.contextmanager
def serve_in_thread(app: Any, *, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL once ready."""
    import threading

    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert thread.is_alive(), "the server thread died"
        try:
            return httpx.get(url + "/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, ready_timeout_s, "the server to be ready", interval_s=0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


# ---- a real server in a subprocess -------------------------------------------------------------------

# The server process: the app of the settings in LPGNET_* variables, served the way `lpgnet serve`
# serves it (app.server.run). A transcript holding SLOW_MARKER makes the text encoder sleep first, so a
# test can hold a request in flight; an utterance_id starting with HOLD_MARKER is held once for as long
# after it was stored and before it is scored, so a test can fail the store in between.
_SERVER = textwrap.dedent(
    """
    import asyncio, logging, sys, time
    import app.engine
    from app.server import run
    from app.settings import Settings
    from model.encoders.onnx import OnnxTextEncoder
    from model.encoders.text import HFTextEncoder

    SLOW, HOLD = {slow!r}, {hold!r}

    def slowed(original):
        def encode_with_info(self, texts):
            if any(SLOW in t for t in texts):
                print("slow request started", file=sys.stderr, flush=True)
                time.sleep({slow_s})
            return original(self, texts)
        return encode_with_info

    # whichever serves: the PyTorch encoder or its onnxruntime graph (the default on CPU)
    HFTextEncoder.encode_with_info = slowed(HFTextEncoder.encode_with_info)
    OnnxTextEncoder.encode_with_info = slowed(OnnxTextEncoder.encode_with_info)
    original_score = app.engine.Engine._score
    held = set()

    async def score(self, key, utterance, *args, **kwargs):
        uid = utterance.meta.utterance_id or ""
        if uid.startswith(HOLD) and uid not in held:
            held.add(uid)
            print("scoring held", file=sys.stderr, flush=True)
            await asyncio.sleep({slow_s})
        return await original_score(self, key, utterance, *args, **kwargs)

    app.engine.Engine._score = score
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    run(Settings(port={port}))
    """
)
SLOW_MARKER = "zz-slow-request-zz"
HOLD_MARKER = "zz-hold"


class ServerProcess:
    """`lpgnet`'s app on uvicorn in a child process, the way `lpgnet serve` runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, *, slow_s: float = 3.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        code = _SERVER.format(slow=SLOW_MARKER, hold=HOLD_MARKER, slow_s=slow_s, port=self.port)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LPGNET_")}
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"server exited: {self.log()}"
            try:
                return httpx.get(self.url + "/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout_s, "the server to be ready", interval_s=0.2)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def server_env(settings: Any) -> dict[str, str]:
    """LPGNET_* variables that rebuild `settings` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None or name == "api_keys":
            continue
        env[f"LPGNET_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    keys = [k.get_secret_value() for k in settings.api_keys]
    if keys:
        env["LPGNET_API_KEYS"] = ",".join(keys)
    return env


# ---- a private redis-server --------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a free loopback port, durable in `directory`.

    appendonly + appendfsync always: every write is on disk before Redis answers it, so a SIGKILL
    (a crash) loses nothing that was acknowledged, and a restart on the same directory reloads it.
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # like the redis_url fixture: skip on a laptop, fail in CI
            if os.environ.get("CI"):
                pytest.fail("CI is set but the redis-server binary is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, 20, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def run_id(self) -> str:
        import redis

        with redis.Redis.from_url(self.url) as client:
            return str(client.info("server")["run_id"])

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to save anything more."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
