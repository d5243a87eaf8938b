"""A voice expert: eGeMAPS read by a linear classifier, heard beside a checkpoint's network.

Why it exists: the network's audio input is what its training corpus holds. The IEMOCAP table gives 8
prosodic statistics and no audio, and a reading of prosody-8 trained there hears ~45 % UA of the
emotions of new speakers (RAVDESS), while the 88 eGeMAPS functionals reach ~60 with the same causal
reading (the model card's "A voice expert" section). eGeMAPS can be computed only where there is audio,
so the expert is trained on acted speech (RAVDESS actors) and added to the network's answer wherever
the service hears a clip: the network's logits plus `weight` times the expert's log-probabilities
(a product of experts; `voice_added`). Rows without the expert's features (text, or a
corpus that stores prosody-8 alone) are answered by the network as before.

The expert reads a conversation's eGeMAPS vectors as the network reads its audio (without the log of
prosody-8's levels): standardised by global statistics (its training clips'), then by the
conversation's own rows in the window (`ConversationNorm`, the checkpoint's priors); a linear layer
gives class log-probabilities. `fit_voice_expert` trains it on the vectors `served_vectors` computes:
each clip's row as the service computes it, the last row of the window of K clips ending at it, with
`VoiceExpert.normalised`, the very function serving runs; so training and serving see the same vectors.

Dimension legend: B windows, U utterances, E the expert's features (88), C classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from model.encoders.base import EncoderSpec
from model.inputs import ConversationNorm
from model.lpgnet import last_rows, take_rows
from model.serving import LastRowNetwork, Network


@dataclass(frozen=True, eq=False)  # tensors inside: compare `digested()`, not the objects
class VoiceExpert:
    spec: EncoderSpec  # the features it reads (eGeMAPS), served after the network's audio features
    labels: tuple[str, ...]  # class order of its log-probabilities: the checkpoint's
    mean: torch.Tensor  # (E,) global standardisation: its training clips' statistics
    std: torch.Tensor  # (E,)
    coef: torch.Tensor  # (C, E) the linear classifier
    intercept: torch.Tensor  # (C,)
    weight: float  # how much its log-probabilities count beside the network's logits
    prior: float  # the conversation statistics' prior (utterances), as the network's audio_prior
    mean_prior: float | None  # as the network's audio_mean_prior
    training: dict[str, Any] = field(default_factory=dict)  # data, regularisation, clips

    def __post_init__(self) -> None:
        c, e = len(self.labels), self.spec.dim
        shapes = {"mean": (e,), "std": (e,), "coef": (c, e), "intercept": (c,)}
        wrong = [
            f"{k} {tuple(getattr(self, k).shape)} (want {v})"
            for k, v in shapes.items()
            if tuple(getattr(self, k).shape) != v
        ]
        if self.weight < 0 or self.prior <= 0:
            wrong.append(f"weight {self.weight}, prior {self.prior} (want >= 0, > 0)")
        if wrong:
            raise ValueError(f"not a voice expert over {c} classes and {e} features: {', '.join(wrong)}")

    def present(self, e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B, U) bool: rows with audio that carry the expert's features (a corpus holding only the
        network's features leaves them zero)."""
        return m & (e != 0).any(-1)

    def normalised(self, e: torch.Tensor, m: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """e (B, U, E) raw features, m (B, U) bool rows with audio -> (B, U, E), zero where absent."""
        m = self.present(e, m)
        w = m.unsqueeze(-1).to(e.dtype)
        z = (e - self.mean) / self.std * w
        return ConversationNorm(self.prior, causal, mean_prior=self.mean_prior)(z, w[..., 0])

    def log_probs(self, e: torch.Tensor, m: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """(B, U, C) class log-probabilities, zero on rows without the expert's features."""
        z = self.normalised(e, m, causal=causal)
        logp = torch.log_softmax(z @ self.coef.T + self.intercept, dim=-1)
        return logp * self.present(e, m).unsqueeze(-1).to(logp.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "labels": list(self.labels),
            "mean": self.mean,
            "std": self.std,
            "coef": self.coef,
            "intercept": self.intercept,
            "weight": self.weight,
            "prior": self.prior,
            "mean_prior": self.mean_prior,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VoiceExpert:
        mean_prior = d.get("mean_prior")
        return cls(
            spec=EncoderSpec.from_dict(d["spec"]),
            labels=tuple(d["labels"]),
            mean=d["mean"].float(),
            std=d["std"].float(),
            coef=d["coef"].float(),
            intercept=d["intercept"].float(),
            weight=float(d["weight"]),
            prior=float(d["prior"]),
            mean_prior=None if mean_prior is None else float(mean_prior),
            training=dict(d.get("training", {})),
        )

    def digested(self) -> dict[str, torch.Tensor]:
        """What a checkpoint's version hashes of it: every number that changes an answer."""
        scalars = [self.weight, self.prior, -1.0 if self.mean_prior is None else self.mean_prior]
        return {
            "voice.mean": self.mean,
            "voice.std": self.std,
            "voice.coef": self.coef,
            "voice.intercept": self.intercept,
            "voice.scalars": torch.tensor(scalars, dtype=torch.float64),
        }


def served_vectors(expert: VoiceExpert, e: torch.Tensor, *, window: int, causal: bool) -> torch.Tensor:
    """(U, E) the normalised vector of each row of one dialogue's raw features `e` (U, E) as the service
    computes it when that row is the last of its window of at most `window` rows: one pass when the
    statistics are causal and the dialogue fits the window, else window by window."""
    m = torch.ones(1, len(e), dtype=torch.bool)
    if causal and len(e) <= window:
        return expert.normalised(e[None], m, causal=True)[0]
    rows = [
        expert.normalised(e[None, max(0, i - window + 1) : i + 1], m[:, : min(i + 1, window)], causal=causal)[
            0, -1
        ]
        for i in range(len(e))
    ]
    return torch.stack(rows) if rows else e[:0]


def fit_voice_expert(
    dialogues: Sequence[tuple[torch.Tensor, torch.Tensor]],
    spec: EncoderSpec,
    labels: Sequence[str],
    *,
    c: float,
    weight: float,
    prior: float,
    mean_prior: float | None,
    causal: bool = True,
    window: int = 64,
    training: dict[str, Any] | None = None,
) -> VoiceExpert:
    """A class-balanced, L2-regularised logistic regression on the served vectors (`served_vectors`, the
    checkpoint's window K and context) of `dialogues` (each (U, E) raw features of its clips as stored,
    in order; (U,) label indices, -1 unlabelled), the objective of scikit-learn's
    `LogisticRegression(C=c, class_weight="balanced")`, solved by L-BFGS. Every class needs labelled
    clips; `ValueError` otherwise."""
    if c <= 0 or weight < 0:
        raise ValueError(f"the voice expert needs c > 0 and weight >= 0, not c={c}, weight={weight}")
    rows = torch.cat([e[(e != 0).any(-1)] for e, _ in dialogues]).double()
    if not len(rows):
        raise ValueError("no clip carries the voice expert's features")
    n_classes = len(labels)
    expert = VoiceExpert(
        spec=spec,
        labels=tuple(labels),
        mean=rows.mean(0).float(),
        std=(rows.std(0) + 1e-6).float(),
        coef=torch.zeros(n_classes, spec.dim),
        intercept=torch.zeros(n_classes),
        weight=weight,
        prior=prior,
        mean_prior=mean_prior,
    )
    xs, ys = [], []
    for e, y in dialogues:
        z = served_vectors(expert, e.float(), window=window, causal=causal)
        keep = expert.present(e.float()[None], torch.ones(1, len(y), dtype=torch.bool))[0] & (y >= 0)
        xs.append(z[keep])
        ys.append(y[keep])
    x, y = torch.cat(xs).double(), torch.cat(ys)
    counts = torch.bincount(y, minlength=n_classes)
    if bool((counts == 0).any()):
        missing = [labels[i] for i in range(n_classes) if counts[i] == 0]
        raise ValueError(f"the voice expert needs labelled clips of every class; none of {missing}")
    sample_weight = (len(y) / (n_classes * counts.double()))[y]  # scikit-learn's "balanced"
    coef = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [coef, bias],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        per_clip = torch.nn.functional.cross_entropy(x @ coef.T + bias, y, reduction="none")
        loss = c * (per_clip * sample_weight).sum() + 0.5 * (coef * coef).sum()  # scikit-learn's objective
        loss.backward()
        return loss

    optimiser.step(objective)
    record = {"c": c, "clips": int(len(y)), "per_class": counts.tolist(), **(training or {})}
    return replace(expert, coef=coef.detach().float(), intercept=bias.detach().float(), training=record)


def voice_added(network: Network, voice: VoiceExpert, audio_dim: int, *, causal: bool) -> Network:
    """`network` (reading the first `audio_dim` numbers of each audio vector) plus `voice.weight` times the
    voice expert's log-probabilities (reading the rest) on the rows that carry the expert's features: a
    product of two experts, the dialogue network and a voice classifier (`model.voice`). A window whose
    audio vectors are `audio_dim` wide, or whose expert part is zero, is answered by `network` alone.
    """

    def rows(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        if a.shape[-1] == audio_dim:
            return network(t, a, tm, am)
        logits = network(t, a[..., :audio_dim].contiguous(), tm, am)  # (B, U, C)
        return logits + voice.weight * voice.log_probs(a[..., audio_dim:], am, causal=causal)

    if not isinstance(network, LastRowNetwork):
        return rows
    network_last = network.last

    def last(t: torch.Tensor, a: torch.Tensor, tm: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        if a.shape[-1] == audio_dim:
            return network_last(t, a, tm, am)
        logits = network_last(t, a[..., :audio_dim].contiguous(), tm, am)  # (B, 1, C)
        heard = voice.log_probs(a[..., audio_dim:], am, causal=causal)  # (B, U, C)
        return logits + voice.weight * take_rows(heard, last_rows(tm, am))

    return LastRowNetwork(rows, last)


__all__ = ["VoiceExpert", "fit_voice_expert", "served_vectors", "voice_added"]
