"""What the network sees in training, so that it works on what clients send (`AugmentConfig`).

- `drop_modalities`: a fraction of the utterances with both modalities lose one (per step);
- `as_sent`: a dialogue as a client sending only some modalities would send it (utterances left
  with neither are never sent, so they are removed);
- `crop`: a random run of at most K utterances, the context the service keeps;
- `neutral_words`: a dialogue whose words are swapped for neutral ones, the voice left to carry the
  emotion (`neutral_text_pool` gathers the words);
- `epoch_dialogues`: one epoch's dialogues, sampled per corpus and augmented as configured.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from model.config import TrainConfig
from model.encoders.prosody import GAIN_POWER
from model.features import DialogueFeatures, FeatureSet


def drop_modalities(
    text_mask: torch.Tensor, audio_mask: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide text or audio (each half the time) of a fraction `p` of the utterances that have both."""
    both = text_mask & audio_mask
    r = torch.rand(text_mask.shape, generator=generator)
    drop_text = both & (r < p / 2)
    drop_audio = both & (r >= p / 2) & (r < p)
    return text_mask & ~drop_text, audio_mask & ~drop_audio


def as_sent(d: DialogueFeatures, keep_text: bool, keep_audio: bool) -> DialogueFeatures:
    """The dialogue as a client sending only these modalities would: utterances left empty removed."""
    tm, am = d.text_mask & keep_text, d.audio_mask & keep_audio
    kept = torch.nonzero(tm | am).flatten()
    return replace(
        d,
        text=d.text[kept] * tm[kept].unsqueeze(-1),
        audio=d.audio[kept] * am[kept].unsqueeze(-1),
        text_mask=tm[kept],
        audio_mask=am[kept],
        labels=d.labels[kept],
        utterance_ids=[d.utterance_ids[i] for i in kept.tolist()] if d.utterance_ids else [],
    )


def crop(d: DialogueFeatures, k: int, rng: random.Random) -> DialogueFeatures:
    """A random run of at most k consecutive utterances: the context the service keeps."""
    if len(d) <= k:
        return d
    s = rng.randrange(0, len(d) - k + 1)
    return replace(
        d,
        text=d.text[s : s + k],
        audio=d.audio[s : s + k],
        text_mask=d.text_mask[s : s + k],
        audio_mask=d.audio_mask[s : s + k],
        labels=d.labels[s : s + k],
        utterance_ids=d.utterance_ids[s : s + k],
    )


def neutral_text_pool(train: FeatureSet, labels: list[str]) -> torch.Tensor | None:
    """(N, Dt) text vectors of the training utterances labelled neutral (None: no such class)."""
    if "neutral" not in labels:
        return None
    k = labels.index("neutral")
    rows = [d.text[(d.labels == k) & d.text_mask] for d in train.dialogues]
    pool = torch.cat(rows) if rows else torch.empty(0)
    return pool if len(pool) else None


def neutral_words(
    d: DialogueFeatures, pool: torch.Tensor, rng: random.Random, scripts: int = 0
) -> DialogueFeatures:
    """Every utterance with audio gets the words of a random neutral utterance (labels kept); one
    without audio is removed, as nothing of its emotion would be left. With `scripts` = n > 0 the
    words come from n neutral utterances drawn once for the dialogue (a fixed script)."""
    kept = torch.nonzero(d.audio_mask).flatten()
    if scripts > 0:
        lines = [rng.randrange(len(pool)) for _ in range(scripts)]
        rows = [rng.choice(lines) for _ in range(len(kept))]
    else:
        rows = [rng.randrange(len(pool)) for _ in range(len(kept))]
    return replace(
        d,
        text=pool[rows].to(d.text.dtype),
        audio=d.audio[kept],
        text_mask=torch.ones(len(kept), dtype=torch.bool),
        audio_mask=torch.ones(len(kept), dtype=torch.bool),
        labels=d.labels[kept],
        utterance_ids=[d.utterance_ids[i] for i in kept.tolist()] if d.utterance_ids else [],
    )


MAX_GAIN_UP_DB = 6.0


def with_gain(d: DialogueFeatures, db: float) -> DialogueFeatures:
    """The dialogue as a microphone `db` louder (negative: quieter) would give its prosody-8 vectors:
    signal levels and the harmonic mean scale by the gain, the autocorrelations by its square, the
    silence fraction not at all."""
    if d.audio.shape[-1] != len(GAIN_POWER):
        raise ValueError(f"augment.audio_gain_db reads prosody-8 (8-d audio), got {d.audio.shape[-1]}-d")
    scale = (10.0 ** (db / 20.0)) ** torch.tensor(GAIN_POWER, dtype=d.audio.dtype)
    return replace(d, audio=d.audio * scale)


def epoch_dialogues(
    train: FeatureSet, cfg: TrainConfig, rng: random.Random, neutral_pool: torch.Tensor | None = None
) -> list[DialogueFeatures]:
    """One epoch's training dialogues: sampled per corpus, augmented as the config says, shuffled.

    `neutral_pool` (from `neutral_text_pool`) is needed when `augment.neutral_words` > 0."""
    aug = cfg.augment
    by_corpus: dict[str, list[DialogueFeatures]] = {}
    for d in train.dialogues:
        by_corpus.setdefault(d.corpus, []).append(d)
    chosen: list[DialogueFeatures] = []
    for corpus, ds in sorted(by_corpus.items()):
        w = aug.corpus_weights.get(corpus, 1.0)
        whole, frac = int(w), w - int(w)
        chosen += ds * whole + rng.sample(ds, round(frac * len(ds)))
    out = []
    for d in chosen:
        r = rng.random()
        if r < aug.dialogue_modality_dropout / 2:
            d = as_sent(d, keep_text=True, keep_audio=False)
        elif r < aug.dialogue_modality_dropout:
            d = as_sent(d, keep_text=False, keep_audio=True)
        elif r < aug.dialogue_modality_dropout + aug.neutral_words and bool(d.audio_mask.any()):
            if neutral_pool is None:
                raise ValueError("augment.neutral_words needs neutral-labelled training utterances")
            d = neutral_words(d, neutral_pool, rng, aug.neutral_scripts)
        if aug.audio_gain_db > 0 and bool(d.audio_mask.any()) and rng.random() < 0.5:  # no draw when off
            d = with_gain(d, rng.uniform(-aug.audio_gain_db, MAX_GAIN_UP_DB))
        if aug.window:
            d = crop(d, cfg.serving.window, rng)
        if len(d) and bool((d.labels >= 0).any()):
            out.append(d)
    rng.shuffle(out)
    return out


__all__ = [
    "as_sent",
    "crop",
    "drop_modalities",
    "epoch_dialogues",
    "neutral_text_pool",
    "neutral_words",
    "with_gain",
]
