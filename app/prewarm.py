"""`python -m app.prewarm`: start the service once, in process, until it is ready, then stop.

Run at image build time (Dockerfile) so that what a first start would write lands in the image:
LPGNet's ONNX graph (`cache_dir`), and numba's compiled librosa kernels (`NUMBA_CACHE_DIR`; site-packages
is not writable by the service's user, so without it every fresh container compiles them again).
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("app.prewarm")


def main(timeout_s: float = 600.0) -> int:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    with TestClient(create_app(Settings())) as client:
        while client.get("/ready").status_code != 200:
            if time.perf_counter() - started > timeout_s:
                log.error("not ready after %.0f s", timeout_s)
                return 1
            time.sleep(0.2)
    log.info("ready after %.1f s; caches written", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
