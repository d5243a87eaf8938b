"""Where things are: the checkout (`REPO_ROOT`), the shared data and encoder templates beside it
(`SHARED_ROOT`, `../shared`), and one cache root outside the checkout for what can be rebuilt.

Every module that needs one of these imports it from here, so none counts `parents[n]` of its own file.

`$XDG_CACHE_HOME/lpgnet` (default `~/.cache/lpgnet`): encoded features (`features/`), exported LPGNet
graphs (the service's `LPGNET_CACHE_DIR` default), the benchmark's production-size random encoders
(`bench-encoders/`, ~800 MB). Nothing large is written into the repository. `write_once` writes a
cache entry (a directory) atomically, once, however many processes race for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"  # corpora (data/), encoder templates (encoders/); read-only


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lpgnet"


def write_once(target: Path, marker: str, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run `write(staging_dir)` and rename it to `target`, unless `target/marker` already exists.

    Leftovers without the marker (an interrupted writer) are removed first; when two writers race,
    the first rename wins and the other's identical copy is dropped.
    """
    if (target / marker).is_file() and not overwrite:
        return target
    if target.exists():  # stale, incomplete or to be overwritten
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        with contextlib.suppress(OSError):  # another writer won the race; its copy is identical
            staging.rename(target)
            logger.info("wrote %s", target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


__all__ = ["REPO_ROOT", "SHARED_ROOT", "cache_root", "write_once"]
