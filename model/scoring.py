"""Scoring a network on extracted features exactly as the service would answer (serving = evaluation).

`predict_dialogues` runs every dialogue through `model.serving.predict_served` (the checkpoint's
window K, float16 storage, the modalities a client sends) or, for the paper's offline protocol, one
pass over each whole dialogue in float32. `score` turns the predictions into the metrics of
`model.metrics`, with the counts of labelled utterances read and scored per class: a labelled
utterance that the chosen modalities leave empty is never sent, so it is read but not scored, and the
counts say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from model.features import DialogueFeatures, FeatureSet
from model.metrics import classification_metrics
from model.serving import (
    MODALITY_SETTINGS,
    Modalities,
    Network,
    ServingContract,
    module_network,
    pad_windows,
    predict_served,
    served_network,
    served_view,
)

Protocol = Literal["served", "offline"]


@dataclass
class DialoguePrediction:
    dialogue: DialogueFeatures
    positions: torch.Tensor  # (U',) long: utterances sent, as positions in the dialogue
    probabilities: torch.Tensor  # (U', C) float64


def checkpoint_network(ckpt: Any) -> Network:
    """What a checkpoint answers with, in PyTorch, composed as the service composes it
    (`model.serving.served_network`: the audio pool of its serving contract, and the text-only network
    it may carry answering the rows that depend on no audio, routed against its chat text network if it
    carries one too)."""
    text_only = getattr(ckpt, "text_only", None)  # baselines carry none
    chat_text = getattr(ckpt, "chat_text", None)
    return served_network(
        module_network(ckpt.model),
        None if text_only is None else module_network(text_only),
        ckpt.serving,
        causal=ckpt.context == "causal",
        chat_text=None if chat_text is None else module_network(chat_text),
        voice=getattr(ckpt, "voice", None),
        audio_dim=ckpt.config.audio_dim,
    )


def predict_dialogues(
    network: Network | torch.nn.Module,
    dialogues: Sequence[DialogueFeatures],
    *,
    contract: ServingContract,
    causal: bool,
    modalities: Modalities = "both",
    protocol: Protocol = "served",
    batch: int = 32,
) -> list[DialoguePrediction]:
    """Per dialogue, the probabilities of every utterance that the modality setting leaves non-empty.

    Dialogues that fit one pass (all of them offline; causal ones of at most K utterances served)
    share padded batches: right padding changes no real row.
    """
    # a module is served as the contract says (its audio pool); a Network comes composed already
    run = (
        served_network(module_network(network), None, contract, causal=causal)
        if isinstance(network, torch.nn.Module)
        else network
    )
    storage = contract.storage if protocol == "served" else "float32"
    views = [served_view(d, modalities, storage) for d in dialogues]
    probs: list[torch.Tensor | None] = [None] * len(dialogues)
    one_pass = [
        i
        for i, v in enumerate(views)
        if len(v.kept) and (protocol == "offline" or (causal and len(v.kept) <= contract.window))
    ]
    for s in range(0, len(one_pass), batch):
        group = one_pass[s : s + batch]
        logits = run(*pad_windows([views[i].window for i in group]).tensors())  # (B, U, C)
        for row, i in enumerate(group):
            probs[i] = torch.softmax(logits[row, : len(views[i].kept)].double(), -1)
    out = []
    for i, d in enumerate(dialogues):
        p = probs[i]
        if p is None and len(views[i].kept):  # a window that slides: the engine's one window per answer
            p, _ = predict_served(run, d, contract, causal=causal, modalities=modalities, view=views[i])
        out.append(DialoguePrediction(d, views[i].kept, p if p is not None else torch.zeros(0, 0)))
    return out


def _counts(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    return {name: int((labels == k).sum()) for k, name in enumerate(names)}


def score(predictions: Sequence[DialoguePrediction], labels: Sequence[str]) -> dict[str, Any]:
    """Metrics over the scored labelled utterances, with read/scored counts per class."""
    read, y_true, y_pred = [], [], []
    for p in predictions:
        y = p.dialogue.labels
        read.append(y[y >= 0].numpy())
        if len(p.positions):
            yk = y[p.positions]
            keep = yk >= 0
            y_true.append(yk[keep].numpy())
            y_pred.append(p.probabilities.argmax(-1)[keep].numpy())
    empty = np.zeros(0, dtype=np.int64)
    t = np.concatenate(y_true) if y_true else empty
    pr = np.concatenate(y_pred) if y_pred else empty
    all_read = np.concatenate(read) if read else empty
    metrics = classification_metrics(t, pr, labels)
    metrics["labelled_read"] = {"total": int(len(all_read)), **_counts(all_read, labels)}
    metrics["labelled_scored"] = {"total": int(len(t)), **_counts(t, labels)}
    return metrics


def evaluate_settings(
    model: torch.nn.Module,
    features: FeatureSet,
    *,
    contract: ServingContract,
    causal: bool,
    settings: Sequence[str] = MODALITY_SETTINGS,
    protocol: Protocol = "served",
) -> dict[str, dict[str, Any]]:
    """`score` of `predict_dialogues` under several modality settings, and per named corpus.

    Keys: "both", "text", "audio" (all corpora together) and "<corpus>/<setting>" for each named
    corpus.
    """
    corpora = sorted({d.corpus for d in features.dialogues})
    out: dict[str, dict[str, Any]] = {}
    for setting in settings:
        preds = predict_dialogues(  # the module served as the contract says: selection = serving
            model,
            features.dialogues,
            contract=contract,
            causal=causal,
            modalities=setting,  # type: ignore[arg-type]
            protocol=protocol,
        )
        out[setting] = score(preds, features.labels)
        if corpora != [""]:  # toy features name no corpus
            for c in corpora:
                out[f"{c}/{setting}"] = score([p for p in preds if p.dialogue.corpus == c], features.labels)
    return out


def selection_settings(entries: Sequence[str]) -> list[str]:
    """The modality settings that selection entries ("both", "ravdess/audio:unweighted_accuracy") need."""
    out = []
    for e in entries:
        setting = e.partition(":")[0].rpartition("/")[2]
        if setting not in out:
            out.append(setting)
    return out


def selection_score(
    results: dict[str, dict[str, Any]], metric: str, entries: Sequence[str], per_corpus: bool
) -> float:
    """The validation score that picks epochs and seeds: the mean over `entries` of a metric.

    An entry is a modality setting ("text": all corpora together, or each corpus weighing the same
    when `per_corpus`), or "corpus/setting"; ":metric" overrides `metric` for that entry (e.g.
    "dailydialog/text:unweighted_accuracy" for a corpus whose classes are unbalanced). Entries with
    nothing to score are left out.
    """
    values = []
    for entry in entries:
        key, _, entry_metric = entry.partition(":")
        if "/" in key:
            keys = [key]
        else:
            keys = [k for k in results if k.endswith("/" + key)] if per_corpus else []
            keys = keys or [key]
        values += [results[k][entry_metric or metric] for k in keys if k in results and results[k]["n"]]
    return float(np.mean(values)) if values else 0.0


__all__ = [
    "DialoguePrediction",
    "checkpoint_network",
    "evaluate_settings",
    "predict_dialogues",
    "score",
    "selection_score",
    "selection_settings",
]
