"""Two text networks routed by confidence, per seed pair: the model card's "Two text networks" table.

    python scripts/text_routing_pairs.py --text runs/text-only --chat runs/chat-text [--test]

For each seed i present in both runs (seed<i>/model.pt), the spoken-dialogue text network alone, the
chat text network alone, and the two routed by confidence over each window
(`model.serving.confidence_routed`, as the default serves them), all as `lpgnet evaluate` computes a
text-only client's answers (PyTorch fp32 encoders). Without --test (the choice): IEMOCAP validation
text accuracy and DailyDialog's carved slice (its last 1,000 training dialogues, the chat run's
validation, on which neither network trained) UA; with --test (printed once, after the choice): IEMOCAP
session 5 and DailyDialog's validation split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_checkpoint
from model.paths import SHARED_ROOT

IEMOCAP = SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl"
DAILYDIALOG = SHARED_ROOT / "data" / "dailydialog" / "dailydialog.jsonl"
SLICE = 1000  # the chat recipe's data.valid_from_train


def carved_slice(out: Path) -> Path:
    """DailyDialog's last SLICE training dialogues (file order) as a corpus whose split is `valid`."""
    rows = [json.loads(line) for line in DAILYDIALOG.open()]
    train = list(dict.fromkeys(r["dialogue_id"] for r in rows if r["split"] == "train"))
    carved = set(train[-SLICE:])
    path = out / "dailydialog-slice.jsonl"
    with path.open("w") as f:
        for r in rows:
            if r["dialogue_id"] in carved:
                f.write(json.dumps({**r, "split": "valid"}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", type=Path, required=True, help="the text-only recipe's run directory")
    parser.add_argument("--chat", type=Path, required=True, help="the chat text recipe's run directory")
    parser.add_argument("--test", action="store_true", help="report test figures (after the choice)")
    args = parser.parse_args()
    seeds = sorted(
        int(p.parent.name.removeprefix("seed"))
        for p in args.text.glob("seed*/model.pt")
        if (args.chat / p.parent.name / "model.pt").is_file()
    )
    if not seeds:
        parser.error("no seed present in both runs")
    kw: dict = {"modalities": "text", "backend": "torch", "precision": "fp32", "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        chat_data = (DAILYDIALOG, "valid") if args.test else (carved_slice(Path(tmp)), "valid")
        spoken_data = (IEMOCAP, "test" if args.test else "valid")
        figures: dict[str, list[tuple[float, float, float]]] = {}
        for seed in seeds:
            for mode in ("alone", "chat", "routed"):
                ckpt = load_checkpoint(args.text / f"seed{seed}" / "model.pt")
                chat = load_checkpoint(args.chat / f"seed{seed}" / "model.pt").model
                if mode == "chat":
                    ckpt.model = chat
                elif mode == "routed":  # a text-only "fused" network: every row is a text network's
                    ckpt.text_only, ckpt.chat_text = ckpt.model, chat
                spoken = evaluate_checkpoint(ckpt, spoken_data[0], spoken_data[1], **kw)
                written = evaluate_checkpoint(ckpt, chat_data[0], chat_data[1], **kw)
                row = (spoken["accuracy"], written["unweighted_accuracy"], written["macro_f1"])
                figures.setdefault(mode, []).append(tuple(100 * x for x in row))  # type: ignore[arg-type]
                print(f"seed {seed} {mode:>6}: " + " / ".join(f"{x:.2f}" for x in figures[mode][-1]))
    what = (
        "IEMOCAP s5 text acc / DailyDialog valid"
        if args.test
        else "IEMOCAP valid text acc / DailyDialog slice"
    )
    print(f"{len(seeds)} seed pairs, {what} UA / macro F1 (mean ± std):")
    for mode, rows in figures.items():
        cols = list(zip(*rows, strict=True))
        std = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
        print(
            f"  {mode:>6}: "
            + " / ".join(f"{statistics.mean(c):.2f} ± {s:.2f}" for c, s in zip(cols, std, strict=True))
        )


if __name__ == "__main__":
    main()
