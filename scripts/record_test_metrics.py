"""Record a checkpoint's per-corpus test figures as `lpgnet evaluate` computes them (`training.test`).

    python scripts/record_test_metrics.py CHECKPOINT

`lpgnet train` records the test figures of the network it trained; a checkpoint that carries a
text-only network (`lpgnet add-text-only`, and perhaps a chat text network beside it) answers
text-only utterances with it, so its figures are
recomputed here through the service's routing (PyTorch fp32 encoders, the checkpoint's window and
storage), per corpus with a test split (IEMOCAP session 5, RAVDESS actors 07-12) and per modality
setting, and, as `dailydialog/text`, DailyDialog's validation split read as a chat client sends it
(text only; the corpus's test split is withheld, so its validation split is what is reported), and
the file is written again. `tests/test_default_weights.py` checks them against
`lpgnet evaluate`. Nothing here chooses anything: run it after the choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.checkpoint import load_checkpoint, save_checkpoint
from model.evaluate import evaluate_checkpoint
from model.paths import SHARED_ROOT

CORPORA = {
    "iemocap": SHARED_ROOT / "data" / "iemocap" / "utterances.jsonl",
    "ravdess": SHARED_ROOT / "data" / "speech" / "ravdess-01-12",
}
SETTINGS = ("both", "text", "audio")
DAILYDIALOG = SHARED_ROOT / "data" / "dailydialog" / "dailydialog.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    path = parser.parse_args().checkpoint
    ckpt = load_checkpoint(path)
    test = {}
    for corpus, data in CORPORA.items():
        for setting in SETTINGS:
            m = evaluate_checkpoint(
                ckpt, data, "test", modalities=setting, backend="torch", precision="fp32", device="cpu"
            )
            test[f"{corpus}/{setting}"] = m
            accuracy, ua = m["accuracy"], m["unweighted_accuracy"]
            print(f"{corpus}/{setting}: n {m['n']}, accuracy {accuracy:.4f}, UA {ua:.4f}")
    if DAILYDIALOG.is_file():
        m = evaluate_checkpoint(
            ckpt, DAILYDIALOG, "valid", modalities="text", backend="torch", precision="fp32", device="cpu"
        )
        test["dailydialog/text"] = m
        print(f"dailydialog/text (validation split): n {m['n']}, UA {m['unweighted_accuracy']:.4f}")
    ckpt.training = {**ckpt.training, "test": test}
    save_checkpoint(ckpt, path)
    print(f"wrote {path} (version {ckpt.version})")


if __name__ == "__main__":
    main()
