"""Print the model card's result tables (markdown) from training runs' metrics.json files.

    python scripts/model_card_tables.py runs/default [--row NAME=runs/other ...]

Every figure is a mean +- sample std over the run's seeds, as `lpgnet train` wrote it: test splits
(IEMOCAP session 5, RAVDESS actors 07-12) under "test", DailyDialog validation under "valid" (its
official test split is not available). Nothing here chooses anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = (  # (title, split, result key)
    ("IEMOCAP s5, text + audio", "test", "iemocap/both"),
    ("IEMOCAP s5, text only", "test", "iemocap/text"),
    ("IEMOCAP s5, audio only", "test", "iemocap/audio"),
    ("DailyDialog valid, text", "valid", "dailydialog/text"),
    ("RAVDESS 07-12, audio only", "test", "ravdess/audio"),
    ("RAVDESS 07-12, audio + neutral text", "test", "ravdess/both"),
)
METRICS = (("acc", "accuracy"), ("UA", "unweighted_accuracy"), ("macro F1", "macro_f1"))


def cell(metrics: dict[str, Any] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return "–"
    m = metrics[key]
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for title, split, key in COLUMNS:
        if not any(key in (r.get(split) or {}) for _, r in rows):
            continue
        lines.append(f"\n**{title}** (`{split}` / `{key}`)\n")
        lines.append("| training | " + " | ".join(name for name, _ in METRICS) + " | n |")
        lines.append("|---|" + "---|" * (len(METRICS) + 1))
        for name, r in rows:
            m = (r.get(split) or {}).get(key)
            per_run = [(x.get(split) or {}).get(key, {}) for x in r["runs"]]
            n = per_run[0].get("n", "–") if per_run else "–"
            lines.append(f"| {name} | " + " | ".join(cell(m, k) for _, k in METRICS) + f" | {n} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("default", type=Path, help="run directory of the default checkpoint")
    ap.add_argument("--row", action="append", default=[], help="NAME=RUN_DIR, another row")
    args = ap.parse_args()
    rows = [("default", json.loads((args.default / "metrics.json").read_text()))]
    for spec in args.row:
        name, _, path = spec.partition("=")
        rows.append((name, json.loads((Path(path) / "metrics.json").read_text())))
    for name, r in rows:
        seeds = r["seeds"]
        print(f"- {name}: {r['model']}, seeds {seeds}, representative seed {r['representative_seed']}")
    print(table(rows))


if __name__ == "__main__":
    main()
