"""Write the tiny random encoders of the `tiny` profile (default: ~/.cache/lpgnet/tiny-encoders).

python scripts/make_tiny_encoders.py [OUT_DIR] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from model.encoders.profiles import DEFAULT_TINY_DIR  # noqa: E402
from model.encoders.tiny import write_tiny_encoders  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_TINY_DIR)
    parser.add_argument("--overwrite", action="store_true", help="rewrite models that already exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = write_tiny_encoders(args.out_dir, overwrite=args.overwrite)
    logging.getLogger("make_tiny_encoders").info("text: %s, audio: %s", paths.text, paths.audio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
