"""How much of the voice's emotion can prosody-8 carry at all, and how much would eGeMAPS? A linear probe.

    python scripts/voice_feature_probe.py [--shared ../shared]

Validation only (the model card's "What prosody-8 can carry" note): RAVDESS actors 01-06, the four
classes, leave-one-actor-out: a class-balanced logistic regression trained on five actors' clips and
scored on the sixth's, every actor's features standardised by that actor's own statistics (the
friendliest reading: a whole speaker known in advance). Trained on acted RAVDESS speech itself, so it
bounds what each feature carries across speakers, not what transfers from IEMOCAP (the service's
training corpus, whose table holds prosody-8 and no audio). Actors 07-12 are never read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, recall_score

from model.encoders.egemaps import EGeMAPSEncoder
from model.encoders.prosody import Prosody8Encoder
from model.ravdess import read_ravdess

CLASSES = ["neutral", "happy", "sad", "angry"]


def per_speaker(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for s in np.unique(speakers):
        rows = speakers == s
        out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()

    prosody, egemaps = Prosody8Encoder(), EGeMAPSEncoder()
    ravdess = read_ravdess(args.shared / "data/speech/ravdess-01-12")
    actors = [d for d in ravdess.dialogues if d.split == "valid"]  # 01-06; 07-12 are never encoded
    rows: dict[str, list[np.ndarray]] = {"prosody-8": [], "eGeMAPS": []}
    labels, speakers = [], []
    for d in actors:
        for u in d.utterances:
            waveform = librosa.load(u.audio, sr=prosody.sample_rate, mono=True)[0]
            rows["prosody-8"].append(prosody.encode_batch([waveform])[0].numpy())
            rows["eGeMAPS"].append(egemaps.encode_batch([waveform])[0].numpy())
            labels.append(CLASSES.index(str(u.label)))
            speakers.append(d.dialogue_id)
    y, who = np.array(labels), np.array(speakers)
    features = {name: np.array(x, dtype=np.float64) for name, x in rows.items()}
    features["both"] = np.hstack([features["prosody-8"], features["eGeMAPS"]])
    print(
        f"{len(y)} clips of {len(actors)} actors, per class {np.bincount(y).tolist()} ({', '.join(CLASSES)})"
    )
    for name, x in features.items():
        z = per_speaker(x, who)
        for c in (0.01, 0.1, 1.0):
            predicted = np.empty_like(y)
            for held_out in np.unique(who):
                fit = who != held_out
                probe = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(z[fit], y[fit])
                predicted[~fit] = probe.predict(z[~fit])
            acc, ua = accuracy_score(y, predicted), recall_score(y, predicted, average="macro")
            print(
                f"{name:>9} ({x.shape[1]:>2} features) C={c:<4}: "
                f"leave-one-actor-out acc {100 * acc:.1f} UA {100 * ua:.1f}"
            )


if __name__ == "__main__":
    main()
