"""Choosing the voice expert (`model.voice`) on validation: leave-one-actor-out on RAVDESS 01-06.

    python scripts/voice_expert_probe.py [--checkpoint weights/lpgnet-offline-causal.pt] [--shared ../shared]

For each candidate (C, w): the expert is fit (`model.voice.fit_voice_expert`) on five of RAVDESS actors
01-06 and heard on the sixth's clips, added to what the checkpoint (without an expert) answers there
through the service's path (`lpgnet evaluate`'s predictions: audio alone, and beside the spoken
sentence); unweighted accuracy (UA) over the six held-out actors. The IEMOCAP guard: IEMOCAP's table
holds no audio, so what an expert trained on acted speech does to IEMOCAP-like conversations cannot be
measured with eGeMAPS; a stand-in of the same design on prosody-8 (the one feature both corpora hold),
fit on all six actors, is added at the same (C, w) to the checkpoint's IEMOCAP validation answers
(both modalities), and the change of accuracy is printed. Actors 07-12 and IEMOCAP session 5 are never
read. The model card's "A voice expert" section holds the rule and the figures.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.cli_voice import voice_dialogues
from model.encoders.egemaps import EGeMAPSEncoder
from model.evaluate import predict_checkpoint
from model.voice import fit_voice_expert

CS = (0.01, 0.1, 1.0)
WEIGHTS = (0.25, 0.5, 1.0)


def unweighted_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    present = [c for c in np.unique(labels)]
    return 100.0 * float(np.mean([(predicted[labels == c] == c).mean() for c in present]))


def answers(ckpt, data: Path, split: str, modalities: str):  # type: ignore[no-untyped-def]
    """{utterance id: log-probabilities} of what the checkpoint answers, and its FeatureSet."""
    _, features, _, predictions = predict_checkpoint(ckpt, data, split, modalities=modalities)
    out = {}
    for p in predictions:
        ids = p.dialogue.utterance_ids
        for pos, probs in zip(p.positions.tolist(), p.probabilities, strict=True):
            out[ids[pos]] = torch.log(probs.clamp(min=1e-12)).float()
    return out, features


class IemocapGuard:
    """What a prosody-8 stand-in expert, added at weight w, changes of the checkpoint's accuracy on
    IEMOCAP validation (both modalities, as served)."""

    def __init__(self, ckpt, iemocap: Path) -> None:  # type: ignore[no-untyped-def]
        self.ckpt, self.causal = ckpt, ckpt.context == "causal"
        answered, self.features = answers(ckpt, iemocap, "valid", "both")
        rows = [
            (d, pos, uid)
            for d in self.features.dialogues
            for pos, uid in enumerate(d.utterance_ids)
            if uid in answered and int(d.labels[pos]) >= 0
        ]
        self.uids = [uid for _, _, uid in rows]
        self.labels = np.array([int(d.labels[pos]) for d, pos, _ in rows])
        self.base = torch.stack([answered[uid] for uid in self.uids])
        self.accuracy = 100.0 * float((self.base.argmax(1).numpy() == self.labels).mean())

    def change(
        self,
        standin_train: Clips,
        c: float,
        w: float,
        *,
        classes: list[str] | None = None,
        mapped: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> float:
        """Accuracy points gained (negative: lost) with the stand-in fit on `standin_train` at (c, w);
        `classes`: the stand-in's own (default the checkpoint's), `mapped` turns its log-probabilities
        into the checkpoint's classes."""
        cfg = self.ckpt.config
        standin = fit_voice_expert(
            standin_train, self.ckpt.encoders["audio"], classes or self.ckpt.labels, c=c, weight=1.0,
            prior=cfg.audio_prior, mean_prior=cfg.audio_mean_prior, causal=self.causal,
        )  # fmt: skip
        heard = {}
        for d in self.features.dialogues:
            a = (d.audio.half().float() * d.audio_mask[:, None])[None]
            logp = standin.log_probs(a, d.audio_mask[None], causal=self.causal)[0]
            heard.update(zip(d.utterance_ids, logp if mapped is None else mapped(logp), strict=True))
        joined = self.base + w * torch.stack([heard[uid] for uid in self.uids])
        return 100.0 * float((joined.argmax(1).numpy() == self.labels).mean()) - self.accuracy


Clips = list[tuple[torch.Tensor, torch.Tensor]]


def standin_clips(ckpt, folder: Path) -> Clips:  # type: ignore[no-untyped-def]
    """The stand-in's training clips: each RAVDESS 01-06 actor's prosody-8 vectors as stored."""
    _, features = answers(ckpt, folder, "valid", "audio")
    return [(d.audio.half().float() * d.audio_mask[:, None], d.labels) for d in features.dialogues]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.voice = None  # the networks alone: the expert is what is chosen here
    ravdess = args.shared / "data/speech/ravdess-01-12"
    iemocap = args.shared / "data/iemocap/utterances.jsonl"
    cfg, causal = ckpt.config, ckpt.context == "causal"
    fit = dict(prior=cfg.audio_prior, mean_prior=cfg.audio_mean_prior, causal=causal)

    clips = voice_dialogues(ckpt, ravdess, "valid")  # actors 01-06, eGeMAPS as stored
    network = {m: answers(ckpt, ravdess, "valid", m)[0] for m in ("audio", "both")}
    ids = [u for d in clips for u in d.utterance_ids]
    labels = torch.cat([d.labels for d in clips]).numpy()
    print(f"RAVDESS 01-06: {len(ids)} clips of {len(clips)} actors, per class {np.bincount(labels).tolist()}")
    for m, logp in network.items():
        alone = torch.stack([logp[u] for u in ids]).argmax(1).numpy()
        print(f"  the networks alone, {m:>5}: UA {unweighted_accuracy(labels, alone):.2f}")

    # the IEMOCAP guard's stand-in: prosody-8, the networks' own audio features, on both corpora
    guard = IemocapGuard(ckpt, iemocap)
    standin_train = standin_clips(ckpt, ravdess)
    print(
        f"IEMOCAP validation, both, the networks alone: accuracy {guard.accuracy:.2f} "
        f"({len(guard.uids)} utterances)"
    )

    voice_spec = EGeMAPSEncoder().spec
    for c in CS:
        held_out_logp = {}
        for d_out in clips:
            rest = [(d.features, d.labels) for d in clips if d is not d_out]
            expert = fit_voice_expert(rest, voice_spec, ckpt.labels, c=c, weight=1.0, **fit)
            m = torch.ones(1, len(d_out.labels), dtype=torch.bool)
            logp = expert.log_probs(d_out.features[None], m, causal=causal)[0]
            held_out_logp.update(zip(d_out.utterance_ids, logp, strict=True))
        expert_logp = torch.stack([held_out_logp[u] for u in ids])
        alone = unweighted_accuracy(labels, expert_logp.argmax(1).numpy())
        cells = [f"C={c}: expert alone UA {alone:.2f}"]
        for w in WEIGHTS:
            ua = {
                m: unweighted_accuracy(
                    labels, (torch.stack([network[m][u] for u in ids]) + w * expert_logp).argmax(1).numpy()
                )
                for m in network
            }
            change = guard.change(standin_train, c, w)
            cells.append(f"w={w}: audio {ua['audio']:.2f} both {ua['both']:.2f} IEMOCAP {change:+.2f}")
        print("  " + "; ".join(cells))


if __name__ == "__main__":
    main()
