"""Where the project keeps what it can rebuild: one cache root outside the checkout.

`$XDG_CACHE_HOME/lpgnet` (default `~/.cache/lpgnet`): encoded features (`features/`), exported LPGNet
graphs (the service's `LPGNET_CACHE_DIR` default), the benchmark's production-size random encoders
(`bench-encoders/`, ~800 MB). Nothing large is written into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lpgnet"


__all__ = ["REPO_ROOT", "cache_root"]
