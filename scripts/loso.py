"""Leave-one-session-out validation of a training recipe over IEMOCAP sessions 1-4 (never session 5).

    python scripts/loso.py --config weights/lpgnet-offline-causal-text-only.toml --out runs/loso-c0 \
        [--seeds 3] [--jobs 2] [--set table.field=value ...] [--summary-only] [lpgnet train options]

Runs `lpgnet train --holdout-session k` for k = 1..4 into OUT/fold<k> (seeds 0..N-1 each; with
`--jobs 2` two folds at a time, one core each; options this script does not know, such as
`--cache-dir` or `--profile`, go to `lpgnet train`) and writes OUT/loso.json: per held-out IEMOCAP
setting, the mean and std over all fold x seed runs of the held-out session's figures, and the mean
per fold; the other corpora's validation figures of the same runs as `valid:<corpus>/<setting>`.
The score of a recipe is the mean held-out accuracy over folds and seeds; it is what a choice
between recipes should read, since 12 validation dialogues cannot separate them. Session 5 is never
loaded as data in a fold, and other corpora's test splits are dropped
(`model.splits.holdout_session`), so nothing printed here is a test figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from model.splits import IEMOCAP_FOLD_SESSIONS

METRICS = ("accuracy", "unweighted_accuracy", "macro_f1")


def run_fold(args: argparse.Namespace, session: int, extra: list[str]) -> int:
    out = args.out / f"fold{session}"
    cmd = [
        sys.executable,
        "-m",
        "model.cli",
        "train",
        "--config",
        str(args.config),
        "--holdout-session",
        str(session),
        "--seeds",
        str(args.seeds),
        "--out",
        str(out),
        "--no-plots",
        *extra,
    ]
    out.mkdir(parents=True, exist_ok=True)
    with (args.out / f"fold{session}.log").open("w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def held_out_runs(out: Path) -> dict[tuple[int, int], dict[str, dict[str, Any]]]:
    """(held-out session, seed) -> setting -> that run's held-out figures (OUT/fold*/metrics.json)."""
    runs: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for session in IEMOCAP_FOLD_SESSIONS:
        path = out / f"fold{session}" / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())
        if metrics.get("data", {}).get("holdout_session") != session:
            raise SystemExit(f"{path} is not the fold holding session {session} out")
        for run in metrics["runs"]:
            # held-out IEMOCAP figures, and the validation figures of the other corpora (DailyDialog...)
            valid = {
                f"valid:{k}": m
                for k, m in (run.get("valid") or {}).items()
                if "/" in k and not k.startswith("iemocap")
            }
            runs[(session, run["seed"])] = (run.get("test") or {}) | valid
    if not runs:
        raise SystemExit(f"no fold metrics under {out}")
    return runs


def summarize(out: Path, baseline: Path | None = None) -> dict[str, Any]:
    """Pool the held-out figures over every fold x seed run, per setting; with `baseline`, also the
    paired difference (same fold, same seed) of the accuracy, which is what a choice should read."""
    runs = held_out_runs(out)
    settings = sorted({s for r in runs.values() for s in r})
    summary: dict[str, Any] = {
        "runs": len(runs),
        "folds": sorted({f for f, _ in runs}),
        "held_out": {
            s: {k: _stats([r[s][k] for r in runs.values() if s in r]) for k in METRICS} for s in settings
        },
        "per_fold_accuracy": {
            s: {
                f: statistics.fmean(r[s]["accuracy"] for (g, _), r in runs.items() if g == f and s in r)
                for f in sorted({f for f, _ in runs})
            }
            for s in settings
        },
    }
    if baseline is not None:
        base = held_out_runs(baseline)
        shared = sorted(set(runs) & set(base))
        diffs = {
            s: [
                runs[k][s]["accuracy"] - base[k][s]["accuracy"]
                for k in shared
                if s in runs[k] and s in base[k]
            ]
            for s in settings
        }
        summary["paired_accuracy_difference"] = {
            "baseline": str(baseline),
            **{
                s: _stats(d) | {"stderr": statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0}
                for s, d in diffs.items()
                if d
            },
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--baseline", type=Path, help="Another recipe's LOSO folder: paired differences.")
    args, passed_on = parser.parse_known_args()
    if not args.summary_only:
        if args.config is None:
            parser.error("--config is needed to train")
        extra = [a for o in args.overrides for a in ("--set", o)] + passed_on
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            codes = list(pool.map(lambda k: run_fold(args, k, extra), IEMOCAP_FOLD_SESSIONS))
        if any(codes):
            raise SystemExit(f"fold runs failed (exit codes {codes}); see {args.out}/fold*.log")
    summary = summarize(args.out, args.baseline)
    (args.out / "loso.json").write_text(json.dumps(summary, indent=2))
    for setting, ms in summary["held_out"].items():
        folds = summary["per_fold_accuracy"].get(setting, {})
        parts = [f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in ms.items()]
        fold_text = " ".join(f"s{f}={a:.4f}" for f, a in sorted(folds.items()))
        kind = "validation" if setting.startswith("valid:") else "held-out"
        name = setting.removeprefix("valid:")
        print(f"{kind} [{name}] (n={ms['accuracy']['n']}): " + ", ".join(parts) + f" | {fold_text}")
    for setting, d in summary.get("paired_accuracy_difference", {}).items():
        if setting != "baseline":
            print(
                f"paired difference [{setting}] vs {args.baseline} (n={d['n']}): "
                f"{d['mean']:+.4f} +- {d['stderr']:.4f} (std error)"
            )


if __name__ == "__main__":
    main()
