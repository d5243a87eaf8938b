"""Score a trained checkpoint (LPGNet or baseline) on a corpus split.

The checkpoint decides everything about its inputs: its encoders are rebuilt from its profile and
must match the specs it records (else `EncoderMismatchError`), its labels come from the file, and
its context mode is in its config. The label mapping of the corpus is the training one when the
checkpoint records a known label set, otherwise each class name maps to itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model.baselines import BaselineCheckpoint, load_baseline
from model.checkpoint import DEFAULT_CHECKPOINT, Checkpoint, load_checkpoint
from model.data import LABEL_SETS, LabelSet, get_label_set, identity_label_set, labelled_only, load_corpus
from model.encoders.base import Encoder, EncoderSpec, check_encoders_match
from model.features import FeatureCache, extract_features
from model.train import evaluate_model

logger = logging.getLogger(__name__)

AnyCheckpoint = Checkpoint | BaselineCheckpoint


def load_any_checkpoint(path: str | Path | None = None) -> AnyCheckpoint:
    """An LPGNet checkpoint or a baseline file; `None` means the default checkpoint."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return load_baseline(path) if payload.get("kind") == "baseline" else load_checkpoint(path)


def checkpoint_label_set(ckpt: AnyCheckpoint) -> LabelSet:
    """The raw-label mapping the checkpoint was trained with (its class names, in its order)."""
    name = ((ckpt.training or {}).get("data") or {}).get("label_set")
    if name in LABEL_SETS and list(LABEL_SETS[name].labels) == list(ckpt.labels):
        return LABEL_SETS[name]
    return identity_label_set(ckpt.labels)


def build_checkpoint_encoders(ckpt: AnyCheckpoint, device: str = "auto") -> dict[str, Encoder]:
    """Build the checkpoint's profile and check its encoders against the recorded specs."""
    from model.encoders.profiles import build_encoders

    encoders = build_encoders(ckpt.profile, device=device)
    actual: dict[str, EncoderSpec] = {m: e.spec for m, e in encoders.items() if m in ckpt.encoders}
    check_encoders_match(ckpt.encoders, actual)
    return {m: e for m, e in encoders.items() if m in ckpt.encoders}


def evaluate_checkpoint(
    checkpoint: str | Path | AnyCheckpoint | None,
    data: str | Path,
    split: str = "test",
    encoders: Mapping[str, Encoder] | None = None,
    cache_dir: str | Path | None = None,
    labels: str | None = None,
    only_labelled: bool | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics (see `model.metrics`) of `checkpoint` on `split` of the corpus at `data`.

    `encoders` defaults to the checkpoint's profile (checked against its specs); `only_labelled`
    defaults to the context setting the checkpoint was trained with.
    """
    ckpt = (
        checkpoint
        if isinstance(checkpoint, Checkpoint | BaselineCheckpoint)
        else load_any_checkpoint(checkpoint)
    )
    if encoders is None:
        encoders = build_checkpoint_encoders(ckpt, device)
    else:
        check_encoders_match(ckpt.encoders, {m: e.spec for m, e in encoders.items() if m in ckpt.encoders})
    label_set = get_label_set(labels) if labels else checkpoint_label_set(ckpt)
    if list(label_set.labels) != list(ckpt.labels):
        raise ValueError(f"label set {list(label_set.labels)} differs from the checkpoint's {ckpt.labels}")
    data_info = (ckpt.training or {}).get("data") or {}
    if only_labelled is None:
        only_labelled = bool(data_info.get("labelled_only", False))
    corpus = load_corpus(data, label_set)
    if only_labelled:
        corpus = labelled_only(corpus)
    corpus = corpus.split(split)
    if not corpus.dialogues:
        raise ValueError(f"no dialogues in split {split!r} of {data}")
    cache = FeatureCache(cache_dir)
    try:
        features = extract_features(corpus, encoders, cache, progress=progress)
    finally:
        cache.close()
    metrics = evaluate_model(ckpt.model, features)
    metrics.update(
        {
            "split": split,
            "checkpoint": {"name": ckpt.name, "version": ckpt.version, "profile": ckpt.profile},
            "context": ckpt.context,
            "labelled_only": only_labelled,
        }
    )
    return metrics


__all__ = ["build_checkpoint_encoders", "evaluate_checkpoint", "load_any_checkpoint"]
