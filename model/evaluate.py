"""Score a trained checkpoint (LPGNet or baseline) on a corpus split, as the service would answer.

The checkpoint decides everything about its inputs: its encoders are rebuilt from its profile by
`model.encoders.factory.checkpoint_encoders`, as the service builds them, and must match the specs it
records (else `EncoderMismatchError`), its labels come from the file, its context mode is in its
config, and its `ServingContract` (window K, float16 storage) is applied the way the service applies
it (`model.serving.predict_served`). `modalities` removes text or audio from every utterance (what a
text-only chatbot or an audio-only line sends); utterances left with neither are never sent, so a
labelled one is read but not scored, and the per-class counts say so.
`protocol="offline"` is the paper's: whole dialogues at once in float32 (bidirectional checkpoints).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.baselines import BaselineCheckpoint, load_baseline
from model.checkpoint import DEFAULT_CHECKPOINT, Checkpoint, load_checkpoint
from model.data import Corpus, labelled_only, load_corpus
from model.encoders.base import Encoder
from model.encoders.factory import EncoderBackend, checked_encoders, checkpoint_encoders, voiced_encoders
from model.encoders.precision import Precision
from model.features import FeatureCache, FeatureSet, extract_features
from model.scoring import DialoguePrediction, Protocol, checkpoint_network, predict_dialogues, score
from model.serving import MODALITY_SETTINGS, Modalities, ServingContract

SPLIT_CHOICES = ("train", "valid", "test", "all")

logger = logging.getLogger(__name__)

AnyCheckpoint = Checkpoint | BaselineCheckpoint


def load_any_checkpoint(path: str | Path | None = None) -> AnyCheckpoint:
    """An LPGNet checkpoint or a baseline file; `None` means the default checkpoint."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return load_baseline(path) if payload.get("kind") == "baseline" else load_checkpoint(path)


def load_eval_corpus(
    ckpt: AnyCheckpoint,
    data: str | Path,
    split: str,
    label_map: str | None = None,
    only_labelled: bool | None = None,
) -> Corpus:
    """The `split` of the corpus at `data`, labelled with the checkpoint's class names.

    IEMOCAP formats carry raw codes and are read through the named mapping with the checkpoint's
    classes; a generic JSONL holds class names unless `label_map` names a raw-code mapping. A label
    that is neither raises `UnknownLabelsError` (nothing is silently dropped).
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLIT_CHOICES)}")
    if only_labelled is None:
        only_labelled = bool(((ckpt.training or {}).get("data") or {}).get("labelled_only", False))
    corpus = load_corpus(data, ckpt.labels, label_map=label_map)
    if list(corpus.labels) != list(ckpt.labels):
        raise ValueError(f"labels {corpus.labels} differ from the checkpoint's {ckpt.labels}")
    if only_labelled:
        corpus = labelled_only(corpus)
    corpus = corpus.split(split)
    if not corpus.dialogues:
        raise ValueError(f"no dialogues in split {split!r} of {data}")
    return corpus


def predict_checkpoint(
    checkpoint: str | Path | AnyCheckpoint | None,
    data: str | Path,
    split: str = "test",
    *,
    modalities: Modalities = "both",
    protocol: Protocol = "served",
    window: int | None = None,
    encoders: Mapping[str, Encoder] | None = None,
    cache_dir: str | Path | None = None,
    label_map: str | None = None,
    only_labelled: bool | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    backend: EncoderBackend = "auto",
    graph_cache: str | Path | None = None,
    progress: bool = False,
) -> tuple[AnyCheckpoint, FeatureSet, ServingContract, list[DialoguePrediction]]:
    """What the service answers for every utterance of `split` (or the offline protocol's answers).

    `window` overrides the checkpoint's K (to mirror a service configured with another
    LPGNET_CONTEXT_WINDOW); `encoders` defaults to the checkpoint's profile served by `backend` (the
    service's LPGNET_ENCODER_BACKEND: auto is onnxruntime on CPU, graphs in `graph_cache`, default the
    user's cache as LPGNET_CACHE_DIR's) at `precision` (the
    service's rule, LPGNET_ENCODER_PRECISION: auto is bf16 autocast on CPUs with native bf16, so
    evaluation on a machine answers what the service answers on it); either way they are checked
    against its specs.
    """
    if split not in SPLIT_CHOICES:  # before anything heavy loads
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLIT_CHOICES)}")
    if modalities not in MODALITY_SETTINGS:
        raise ValueError(f"unknown modalities {modalities!r}: use one of {', '.join(MODALITY_SETTINGS)}")
    ckpt = (
        checkpoint
        if isinstance(checkpoint, Checkpoint | BaselineCheckpoint)
        else load_any_checkpoint(checkpoint)
    )
    corpus = load_eval_corpus(ckpt, data, split, label_map, only_labelled)
    voice = getattr(ckpt, "voice", None)  # baselines hear none
    if encoders is None:
        encoders = checkpoint_encoders(
            ckpt.encoders,
            ckpt.profile,
            device=device,
            precision=precision,
            backend=backend,
            cache_dir=graph_cache,
            voice=None if voice is None else voice.spec,
        )
    else:
        encoders = checked_encoders(ckpt.encoders, encoders)
        if voice is not None:
            encoders = voiced_encoders(encoders, voice.spec)
    cache = FeatureCache(cache_dir)
    try:
        features = extract_features(corpus, encoders, cache, progress=progress)
    finally:
        cache.close()
    contract = ckpt.serving if window is None else replace(ckpt.serving, window=window)
    predictions = predict_dialogues(
        checkpoint_network(ckpt),
        features.dialogues,
        contract=contract,
        causal=ckpt.context == "causal",
        modalities=modalities,
        protocol=protocol,
    )
    return ckpt, features, contract, predictions


def evaluation_report(
    ckpt: AnyCheckpoint,
    features: FeatureSet,
    contract: ServingContract,
    predictions: list[DialoguePrediction],
    *,
    split: str,
    modalities: str,
    protocol: str,
) -> dict[str, Any]:
    """`model.scoring.score`'s metrics and counts, with what was evaluated and how."""
    metrics = score(predictions, features.labels)
    metrics.update(
        {
            "split": split,
            "checkpoint": {"name": ckpt.name, "version": ckpt.version, "profile": ckpt.profile},
            "context": ckpt.context,
            "modalities": modalities,
            "protocol": protocol,
            "window": contract.window,
            "storage": contract.storage,
            "audio_weight": contract.audio_weight,
        }
    )
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path | AnyCheckpoint | None,
    data: str | Path,
    split: str = "test",
    **options: Any,
) -> dict[str, Any]:
    """Metrics (see `model.metrics`) of `checkpoint` on `split` of the corpus at `data`, computed
    from what the service would answer (`predict_checkpoint`'s options), with per-class counts of the
    labelled utterances read and scored."""
    ckpt, features, contract, predictions = predict_checkpoint(checkpoint, data, split, **options)
    return evaluation_report(
        ckpt,
        features,
        contract,
        predictions,
        split=split,
        modalities=options.get("modalities", "both"),
        protocol=options.get("protocol", "served"),
    )


def prediction_rows(features: FeatureSet, predictions: list[DialoguePrediction]) -> list[dict[str, Any]]:
    """One JSON-able row per utterance answered: ids, label, probabilities by class name."""
    rows = []
    for p in predictions:
        d = p.dialogue
        for pos, probs in zip(p.positions.tolist(), p.probabilities.tolist(), strict=True):
            label = int(d.labels[pos])
            rows.append(
                {
                    "dialogue_id": d.dialogue_id,
                    "utterance_id": d.utterance_ids[pos] if d.utterance_ids else f"{d.dialogue_id}_{pos}",
                    "label": features.labels[label] if label >= 0 else None,
                    "probabilities": dict(zip(features.labels, probs, strict=True)),
                }
            )
    return rows


__all__ = [
    "SPLIT_CHOICES",
    "evaluate_checkpoint",
    "evaluation_report",
    "load_any_checkpoint",
    "load_eval_corpus",
    "predict_checkpoint",
    "prediction_rows",
]
