"""Would prosody-8 standardised per speaker transfer better than per conversation? A linear probe.

    python scripts/speaker_norm_probe.py [--shared ../shared] [--log]

Validation only (the model card's "Statistics per speaker" table): a class-balanced logistic regression
on the 8 prosodic features, trained on IEMOCAP sessions 1-4 training dialogues, scored on IEMOCAP's
validation dialogues and on RAVDESS actors 01-06 (one conversation per actor, as `model.ravdess` reads
it). Features are standardised globally with the training statistics, then by the running statistics
of the network's own `model.inputs.ConversationNorm` (prior worth 4 utterances) kept per conversation or per
(conversation, speaker), causally or over the whole dialogue. Session 5 and actors 07-12 are never read.
`--log` first reads the features as `model.inputs.Prosody8Log` does (the level features as logs, so a
microphone's gain becomes a shift; asinh of the signed harmonic mean).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import librosa
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, recall_score

from model.encoders.prosody import Prosody8Encoder
from model.inputs import ConversationNorm, Prosody8Log
from model.ravdess import read_ravdess

CLASSES = ["neutral", "happy", "sad", "angry"]
IEMOCAP4 = {"ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral"}
PRIOR = 4.0  # the default recipe's `model.audio_prior`

Rows = Sequence[tuple[np.ndarray, Hashable]]  # a dialogue: (globally standardised x, group key) per row


def grouped(dialogue: Rows, causal: bool) -> list[np.ndarray]:
    """Each row standardised by its group's rows (so far, if `causal`) with the network's own module."""
    norm = ConversationNorm(PRIOR, causal=causal)
    out: list[np.ndarray] = [np.empty(0)] * len(dialogue)
    for key in dict.fromkeys(k for _, k in dialogue):
        rows = [i for i, (_, k) in enumerate(dialogue) if k == key]
        x = torch.tensor(np.stack([dialogue[i][0] for i in rows]), dtype=torch.float64).unsqueeze(0)
        normed = norm(x, torch.ones(x.shape[:2], dtype=torch.float64))[0].numpy()
        for i, row in zip(rows, normed, strict=True):
            out[i] = row
    return out


def running(dialogue: Rows) -> list[np.ndarray]:
    """Causal: each row by its group's rows so far (itself included), with the prior."""
    return grouped(dialogue, causal=True)


def whole(dialogue: Rows) -> list[np.ndarray]:
    """Every row by all its group's rows (an offline reading: a live service cannot see ahead)."""
    return grouped(dialogue, causal=False)


def log_levels(x: np.ndarray) -> np.ndarray:
    """Prosody-8 as `Prosody8Log` reads it: levels and autocorrelations as logs, harmonic mean as asinh."""
    return Prosody8Log().double()(torch.tensor(np.asarray(x), dtype=torch.float64)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--log", action="store_true", help="log of the level features first")
    args = parser.parse_args()
    feature = log_levels if args.log else (lambda x: np.asarray(x, dtype=np.float64))

    table = [json.loads(line) for line in (args.shared / "data/iemocap/utterances.jsonl").open()]
    table = [r for r in table if r["session"] in (1, 2, 3, 4) and r["prosody"]]  # session 5 never read
    table.sort(key=lambda r: (r["dialogue_id"], r["start"]))
    fit = np.array([feature(r["prosody"]) for r in table if r["cosmic_split"] == "train"])
    mu, sd = fit.mean(0), fit.std(0) + 1e-8

    def iemocap(split: str, per_speaker: bool, norm: Callable[[Rows], list[np.ndarray]]):
        dialogues: dict[str, list[dict]] = {}
        for r in table:
            if r["cosmic_split"] == split:
                dialogues.setdefault(r["dialogue_id"], []).append(r)
        xs, ys = [], []
        for rows in dialogues.values():
            keys = [r["speaker"] if per_speaker else "" for r in rows]
            normed = norm([((feature(r["prosody"]) - mu) / sd, k) for r, k in zip(rows, keys, strict=True)])
            for r, x in zip(rows, normed, strict=True):
                if r["emotion"] in IEMOCAP4:
                    xs.append(x)
                    ys.append(CLASSES.index(IEMOCAP4[r["emotion"]]))
        return np.array(xs), np.array(ys)

    encoder = Prosody8Encoder()
    ravdess = read_ravdess(args.shared / "data/speech/ravdess-01-12")
    actors = [d for d in ravdess.dialogues if d.split == "valid"]  # 01-06; 07-12 are never encoded
    clips = {}
    for d in actors:
        for u in d.utterances:
            waveform = librosa.load(u.audio, sr=encoder.sample_rate, mono=True)[0]
            clips[u.utterance_id] = encoder.encode_batch([waveform])[0].numpy()
    y_rav = np.array([CLASSES.index(str(u.label)) for d in actors for u in d.utterances])

    for name, norm in (("causal", running), ("whole dialogue", whole)):
        per_actor = [[((feature(clips[u.utterance_id]) - mu) / sd, "") for u in d.utterances] for d in actors]
        x_rav = np.array([x for rows in per_actor for x in norm(rows)])
        for per_speaker in (False, True):
            x_fit, y_fit = iemocap("train", per_speaker, norm)
            x_val, y_val = iemocap("valid", per_speaker, norm)
            for c in (0.1, 1.0):
                probe = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x_fit, y_fit)
                p_val, p_rav = probe.predict(x_val), probe.predict(x_rav)
                print(
                    f"{name:>14}, per {'speaker' if per_speaker else 'conversation':<12} C={c}: "
                    f"IEMOCAP valid acc {100 * accuracy_score(y_val, p_val):.1f} "
                    f"UA {100 * recall_score(y_val, p_val, average='macro'):.1f} | "
                    f"RAVDESS 01-06 acc {100 * accuracy_score(y_rav, p_rav):.1f} "
                    f"UA {100 * recall_score(y_rav, p_rav, average='macro'):.1f}"
                )


if __name__ == "__main__":
    main()
