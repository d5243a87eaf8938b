"""The service as deployed: `create_app(Settings())` under uvicorn, in its own process, on loopback.

`python -m bench.server --port N` is what `ServiceProcess` starts; its configuration comes from
LPGNET_* environment variables exactly as for `lpgnet serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from model.paths import REPO_ROOT

READY_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """LPGNET_* variables for a settings dict (None values are left unset)."""
    return {f"LPGNET_{k.upper()}": str(v) for k, v in settings.items() if v is not None}


class ServiceProcess:
    """A uvicorn process serving the app; `start()` returns at once, `wait_ready()` blocks.

    A thread polls GET /ready from the start, so `ready_after_s` (process start to the first 200) is
    known to 0.1 s however late `wait_ready` is called.
    """

    def __init__(self, settings: dict[str, Any], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LPGNET_")}
        env.update(settings_env(self.settings))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._watch_ready, args=(started,), name="ready-watch", daemon=True).start()

    def _watch_ready(self, started: float) -> None:
        import httpx

        assert self.process is not None
        while not self._stopping.is_set() and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2.0).status_code == 200:
                    self.ready_after_s = round(time.perf_counter() - started, 2)
                    self._ready.set()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until GET /ready has answered 200 (the engine is loaded and warmed up)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.25):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited with code {self.process.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service was not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, so no orphaned service keeps a port and RAM."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    import logging

    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    parser = argparse.ArgumentParser(description="Serve the app for the benchmark (LPGNET_* settings).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux"):
        _die_with_parent()
    settings = Settings()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
