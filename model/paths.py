"""Where things are: the checkout (`REPO_ROOT`), the shared data and encoder templates beside it
(`SHARED_ROOT`, `../shared`), and one cache root outside the checkout for what can be rebuilt.

Every module that needs one of these imports it from here, so none counts `parents[n]` of its own file.

`$XDG_CACHE_HOME/lpgnet` (default `~/.cache/lpgnet`): encoded features (`features/`), exported LPGNet
graphs (the service's `LPGNET_CACHE_DIR` default), the benchmark's production-size random encoders
(`bench-encoders/`, ~800 MB). Nothing large is written into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"  # corpora (data/), encoder templates (encoders/); read-only


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lpgnet"


__all__ = ["REPO_ROOT", "SHARED_ROOT", "cache_root"]
