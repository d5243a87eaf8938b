"""Would the 4-class voice expert stop the 6-class checkpoint's false frustration alarms? A probe.

    python scripts/voice_six_class_probe.py [--shared ../shared]

Validation only: RAVDESS actors 01-06 (leave one actor out) and IEMOCAP validation. The voice expert's
4-class recipe (`model.voice`, C = 0.1) is mapped onto the 6 classes (happy -> happy and excited;
neutral, sad, angry as themselves; frustrated gets the mean of its four log-probabilities: the voice
says nothing about it) and added at weight w to what the 6-class checkpoint answers through the
service's path (its audio pool included). Printed per w: RAVDESS audio + sentence UA over the four
classes present, how many clips are answered `frustrated`, and the IEMOCAP guard (a prosody-8 stand-in
mapped alike, fit on all six actors, added to the 6-class IEMOCAP validation answers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from voice_expert_probe import (  # beside it in scripts/
    IemocapGuard,
    answers,
    standin_clips,
    unweighted_accuracy,
)

from model.checkpoint import load_checkpoint
from model.cli_voice import voice_dialogues
from model.encoders.egemaps import EGeMAPSEncoder
from model.paths import REPO_ROOT
from model.voice import fit_voice_expert

FOUR = ("neutral", "happy", "sad", "angry")
SOURCE = {"happy": "happy", "excited": "happy", "neutral": "neutral", "sad": "sad", "angry": "angry"}
WEIGHTS = (0.25, 0.5)


def six_from_four(logp: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """(..., 4) log-probabilities -> (..., C) over `labels`; a class the voice cannot tell gets the mean."""
    columns = [logp[..., FOUR.index(SOURCE[c])] if c in SOURCE else logp.mean(-1) for c in labels]
    return torch.stack(columns, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    six = load_checkpoint(REPO_ROOT / "weights" / "lpgnet-offline-causal-6class.pt")
    ravdess = args.shared / "data/speech/ravdess-01-12"
    cfg, causal = six.config, six.context == "causal"
    fit = dict(c=0.1, weight=1.0, prior=cfg.audio_prior, mean_prior=cfg.audio_mean_prior, causal=causal)
    frustrated = six.labels.index("frustrated")

    clips = voice_dialogues(six, ravdess, "valid")
    to_four = {six.labels.index(c): FOUR.index(c) for c in FOUR}

    def four(y: torch.Tensor) -> torch.Tensor:
        return torch.tensor([to_four.get(int(v), -1) for v in y])

    network, _ = answers(six, ravdess, "valid", "both")
    ids = [u for d in clips for u in d.utterance_ids]
    labels = torch.cat([d.labels for d in clips]).numpy()
    base = torch.stack([network[u] for u in ids])
    print(
        f"6-class, RAVDESS 01-06 audio + sentence, alone: "
        f"UA {unweighted_accuracy(labels, base.argmax(1).numpy()):.2f}, "
        f"frustrated {int((base.argmax(1) == frustrated).sum())} of {len(ids)}"
    )
    heard = {}
    for d_out in clips:
        rest = [(d.features, four(d.labels)) for d in clips if d is not d_out]
        expert = fit_voice_expert(rest, EGeMAPSEncoder().spec, list(FOUR), **fit)
        m = torch.ones(1, len(d_out.labels), dtype=torch.bool)
        logp = six_from_four(expert.log_probs(d_out.features[None], m, causal=causal)[0], six.labels)
        heard.update(zip(d_out.utterance_ids, logp, strict=True))
    expert_logp = torch.stack([heard[u] for u in ids])

    # the IEMOCAP guard: the prosody-8 stand-in, 4-class on RAVDESS, mapped onto the 6 classes
    guard = IemocapGuard(six, args.shared / "data/iemocap/utterances.jsonl")
    standin_train = [(a, four(y)) for a, y in standin_clips(six, ravdess)]
    print(f"6-class IEMOCAP validation, both, alone: accuracy {guard.accuracy:.2f}")
    for w in WEIGHTS:
        joined = base + w * expert_logp
        ua = unweighted_accuracy(labels, joined.argmax(1).numpy())
        change = guard.change(
            standin_train, 0.1, w, classes=list(FOUR), mapped=lambda logp: six_from_four(logp, six.labels)
        )
        print(
            f"w={w}: RAVDESS audio + sentence UA {ua:.2f}, "
            f"frustrated {int((joined.argmax(1) == frustrated).sum())}; IEMOCAP guard {change:+.2f}"
        )


if __name__ == "__main__":
    main()
