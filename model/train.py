"""Training of LPGNet and its baselines on extracted features, selected on validation as served.

Protocol (`train_seeds`): for each seed, train on the `train` split, score the `valid` split after
every epoch *as the service would answer it* (`model.scoring`: the window K, float16 storage, each
modality setting of `select.modalities`), keep the weights of the best epoch (with `optim.ema`, an
exponential moving average of the weights is what is scored, kept and saved; early stopping after
`patience` epochs without improvement), then score those weights once on `test` under every modality
setting (in a leave-one-session-out fold, `data.holdout_session`, the test split is the held-out
session). Nothing is ever chosen on the test split. Over N seeds the headline metrics are reported as
mean +- std; the representative model written as `model.pt` is the seed with the best validation
score.

What the network sees in training (`AugmentConfig`), so that it works on what clients send:
- utterance-level modality dropout: a fraction of the utterances with both modalities lose one;
- whole-dialogue modality dropout: a fraction of the dialogues arrive text-only or audio-only, and
  utterances left with neither are removed (a text-only client never sends them);
- windows: a dialogue longer than K is cut to a random run of K utterances, the context the service
  keeps;
- per-corpus sampling weights for multi-corpus training, and optional class weights.
Input standardisation uses statistics of the training split only.

Output directory: `model.pt`, `seed<k>/model.pt`, `metrics.json`, `train.toml` (the exact config),
`confusion.png`, `learning_curve.png`.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model.augment import drop_modalities, epoch_dialogues, neutral_text_pool
from model.baselines import BaselineCheckpoint, BaselineConfig, build_baseline, save_baseline
from model.checkpoint import Checkpoint, save_checkpoint
from model.config import TrainConfig
from model.encoders.base import EncoderSpec
from model.features import DialogueFeatures, FeatureSet, normalization_stats
from model.losses import LossWeights, lpgnet_loss
from model.lpgnet import LPGNet
from model.metrics import HEADLINE, summarize_runs
from model.scoring import evaluate_settings, selection_score, selection_settings
from model.serving import MODALITY_SETTINGS, Padded, pad_windows

BASELINE_LOSS = LossWeights(task=1.0, ce=0.0, kl=0.0)


@dataclass
class Batch(Padded):
    """`pad_windows`' padded tensors (the service's padding) plus labels (B, U), -1 = none or padding."""

    labels: torch.Tensor


def collate(dialogues: Sequence[DialogueFeatures]) -> Batch:
    padded = pad_windows(dialogues)
    u = padded.text.shape[1]
    labels = torch.stack([nn.functional.pad(d.labels, (0, u - len(d)), value=-1) for d in dialogues])
    return Batch(*padded.tensors(), padded.lengths, labels)


def build_model(cfg: TrainConfig, text_dim: int, audio_dim: int, num_classes: int) -> nn.Module:
    net = cfg.network_config(text_dim, audio_dim, num_classes)
    if cfg.kind == "lpgnet":
        return LPGNet(net)
    return build_baseline(
        BaselineConfig(
            kind=cfg.kind,
            text_dim=text_dim,
            audio_dim=audio_dim,
            hidden=net.hidden,
            num_classes=num_classes,
            context=net.context,
            modalities=net.modalities,
            dropout=net.dropout,
        )
    )


def class_balance(train: FeatureSet, num_classes: int) -> dict[str, torch.Tensor]:
    """Per corpus, inverse-frequency class weights (C,) with mean 1 over its present classes, so a
    corpus that is 83 % neutral does not teach every corpus to answer neutral."""
    out = {}
    for corpus in {d.corpus for d in train.dialogues}:
        y = torch.cat([d.labels for d in train.dialogues if d.corpus == corpus])
        counts = torch.bincount(y[y >= 0], minlength=num_classes).float()
        w = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
        out[corpus] = w / w[counts > 0].mean()
    return out


def weight_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers (None when `decay` is 0)."""
    if decay <= 0:
        return None
    if decay >= 1:
        raise ValueError(f"optim.ema must be in [0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _seed_everything(seed: int) -> random.Random:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return random.Random(seed)


@dataclass
class RunResult:
    seed: int
    model: nn.Module
    selected_epoch: int  # 1-based
    history: list[dict[str, float]]  # per epoch: train loss, validation score and accuracies
    valid: dict[str, dict[str, Any]]  # modality setting (and corpus/setting) -> metrics
    test: dict[str, dict[str, Any]] | None
    score: float  # the validation selection score of the selected epoch
    seconds: float


def _evaluate(model: nn.Module, features: FeatureSet, cfg: TrainConfig, settings: Sequence[str]) -> Any:
    causal = cfg.model.context == "causal"
    # causal models are selected as served; a bidirectional one is the paper's offline protocol
    return evaluate_settings(
        model,
        features,
        contract=cfg.serving,
        causal=causal,
        settings=settings,
        protocol="served" if causal else "offline",
    )


def train_one(features: FeatureSet, cfg: TrainConfig, seed: int = 0, progress: bool = False) -> RunResult:
    """Train one model on features' train split, select on valid, score test once."""
    torch.set_num_threads(cfg.optim.threads)  # this thread only: torch's count is per thread once set
    rng = _seed_everything(seed)
    train, valid, test = features.split("train"), features.split("valid"), features.split("test")
    if not train.dialogues or not valid.dialogues:
        raise ValueError("training needs non-empty train and valid splits")
    model = build_model(cfg, features.text_dim, features.audio_dim, len(features.labels))
    # statistics of the features as the network reads them (LPGNet may transform its audio first)
    read = {"audio": model.read_audio} if isinstance(model, LPGNet) else {}
    model.set_normalization(normalization_stats(train, read))  # type: ignore[operator]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    weights = (
        cfg.loss if cfg.kind == "lpgnet" else replace(BASELINE_LOSS, label_smoothing=cfg.loss.label_smoothing)
    )
    balance = class_balance(train, len(features.labels)) if cfg.augment.class_weights else None
    pool = neutral_text_pool(train, features.labels) if cfg.augment.neutral_words > 0 else None
    gen = torch.Generator().manual_seed(seed)
    sel = cfg.select
    average = weight_average(model, cfg.optim.ema)
    scored = average.module if average is not None else model

    start, best_score, best_state, best_epoch, history, stale = time.time(), -1.0, None, 0, [], 0
    bar = tqdm(
        range(1, cfg.optim.epochs + 1), desc=f"{cfg.kind} seed {seed}", disable=not progress, leave=False
    )
    for epoch in bar:
        model.train()
        dialogues = epoch_dialogues(train, cfg, rng, pool)
        losses = []
        for s in range(0, len(dialogues), cfg.optim.batch_size):
            chunk = dialogues[s : s + cfg.optim.batch_size]
            b = collate(chunk)
            tm, am = b.text_mask, b.audio_mask
            if cfg.augment.modality_dropout > 0 and cfg.model.modalities == "both":
                tm, am = drop_modalities(tm, am, cfg.augment.modality_dropout, gen)
            out = model(b.text, b.audio, tm, am)
            sample_weight = None
            if balance is not None:  # each corpus's classes weigh the same within it
                table = torch.stack([balance[d.corpus] for d in chunk])  # (B, C)
                sample_weight = torch.gather(table, 1, b.labels.clamp(min=0))  # (B, U)
            loss, _ = lpgnet_loss(out, b.labels, tm, am, weights, sample_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if average is not None:
                average.update_parameters(model)
            losses.append(loss.item())
        v = _evaluate(scored, valid, cfg, selection_settings(sel.modalities))
        epoch_score = selection_score(v, sel.metric, sel.modalities, sel.per_corpus)
        history.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_score": epoch_score}
            | {f"valid_{k}_accuracy": m["accuracy"] for k, m in v.items()}
        )
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid=f"{epoch_score:.4f}")
        if epoch_score > best_score:
            best_score, best_epoch, stale = epoch_score, epoch, 0
            best_state = copy.deepcopy(scored.state_dict())
        else:
            stale += 1
            if stale >= cfg.optim.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    settings = MODALITY_SETTINGS if cfg.model.modalities == "both" else (cfg.model.modalities,)
    valid_metrics = _evaluate(model, valid, cfg, settings)
    test_metrics = _evaluate(model, test, cfg, settings) if test.dialogues else None
    seconds = time.time() - start
    return RunResult(seed, model, best_epoch, history, valid_metrics, test_metrics, best_score, seconds)


def _headline(results: dict[str, dict[str, Any]] | None) -> dict[str, Any] | None:
    keep = (*HEADLINE, "n", "per_class", "labelled_read", "labelled_scored")
    return None if results is None else {s: {k: m[k] for k in keep} for s, m in results.items()}


def make_checkpoint(
    run: RunResult, features: FeatureSet, profile: str, training: dict[str, Any], cfg: TrainConfig
) -> Checkpoint | BaselineCheckpoint:
    encoders: dict[str, EncoderSpec] = {m: s for m, s in features.specs.items() if s is not None}
    if isinstance(run.model, LPGNet):
        return Checkpoint(
            model=run.model,
            labels=features.labels,
            encoders=encoders,
            profile=profile,
            training=training,
            serving=cfg.serving,
        )
    return BaselineCheckpoint(
        model=run.model,  # type: ignore[arg-type]
        labels=features.labels,
        encoders=encoders,
        profile=profile,
        name=f"baseline-{run.model.cfg.kind}",  # type: ignore[union-attr]
        training=training,
    )


def save_any(ckpt: Checkpoint | BaselineCheckpoint, path: Path) -> Path:
    return save_checkpoint(ckpt, path) if isinstance(ckpt, Checkpoint) else save_baseline(ckpt, path)


def _summaries(runs: Sequence[RunResult], split: str) -> dict[str, Any]:
    per_run = [getattr(r, split) for r in runs]
    if any(p is None for p in per_run):
        return {}
    return {s: summarize_runs([p[s] for p in per_run]) for s in per_run[0]}


def train_seeds(
    features: FeatureSet,
    cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    profile: str,
    data_info: dict[str, Any] | None = None,
    progress: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Train one model per seed, write checkpoints, metrics and figures; return the metrics dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.toml").write_text(cfg.to_toml())
    split_sizes = {
        s: {
            "dialogues": len(features.split(s).dialogues),
            "labelled": sum(int((d.labels >= 0).sum()) for d in features.split(s).dialogues),
        }
        for s in ("train", "valid", "test")
    }
    runs: list[RunResult] = []
    for seed in tqdm(seeds, desc="seeds", disable=not progress or len(seeds) < 2):
        run = train_one(features, cfg, seed, progress)
        runs.append(run)
        training = {
            "seed": seed,
            "selected_epoch": run.selected_epoch,
            "select": cfg.to_dict()["select"],
            "valid_score": run.score,
            "train_config": cfg.to_dict(),
            "data": data_info or {},
            "splits": split_sizes,
            "valid": _headline(run.valid),
            "test": _headline(run.test),
            "history": run.history,
        }
        save_any(make_checkpoint(run, features, profile, training, cfg), out / f"seed{seed}" / "model.pt")
        if progress:
            tqdm.write(
                f"seed {seed}: epoch {run.selected_epoch}, valid score {run.score:.4f} ({run.seconds:.0f}s)"
            )
    best = max(runs, key=lambda r: r.score)
    shutil.copyfile(out / f"seed{best.seed}" / "model.pt", out / "model.pt")
    result: dict[str, Any] = {
        "model": cfg.kind,
        "profile": profile,
        "labels": features.labels,
        "encoders": {m: (s.to_dict() if s else None) for m, s in features.specs.items()},
        "train_config": cfg.to_dict(),
        "data": data_info or {},
        "splits": split_sizes,
        "seeds": list(seeds),
        "representative_seed": best.seed,
        "representative_rule": (
            f"best validation score ({cfg.select.metric}, mean over {list(cfg.select.modalities)})"
        ),
        "valid_score": summarize_runs([{"score": r.score} for r in runs], ("score",))["score"],
        "valid": _summaries(runs, "valid"),
        "runs": [
            {
                "seed": r.seed,
                "selected_epoch": r.selected_epoch,
                "seconds": round(r.seconds, 1),
                "valid_score": r.score,
                "valid": _headline(r.valid),
                "test": _headline(r.test),
            }
            for r in runs
        ],
    }
    if all(r.test is not None for r in runs):
        result["test"] = _summaries(runs, "test")
        result["representative_test"] = _headline(best.test)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    if plots:
        from model.plots import plot_confusion, plot_learning_curves

        first = next(iter(best.valid))
        shown = (best.test or best.valid)[first]
        which = f"{heldout_label(data_info or {})}, {first}" if best.test else f"validation, {first}"
        plot_confusion(
            shown["confusion"],
            features.labels,
            out / "confusion.png",
            f"{cfg.kind}, seed {best.seed}, {which}",
        )
        plot_learning_curves(
            [r.history for r in runs],
            out / "learning_curve.png",
            "valid_score",
            [f"seed {r.seed}" for r in runs],
        )
    return result


def heldout_label(data_info: dict[str, Any]) -> str:
    """What the run's test split is called: "test", or the held-out session of a fold."""
    held = data_info.get("holdout_session")
    return f"held-out session {held}" if held else "test"


def format_summary(result: dict[str, Any]) -> str:
    lines = []
    for split in ("valid", "test"):
        name = heldout_label(result.get("data", {})) if split == "test" else split
        for setting, metrics in result.get(split, {}).items():
            parts = [f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in metrics.items()]
            lines.append(f"{name} [{setting}]: " + ", ".join(parts))
    return "\n".join(lines)


__all__ = [
    "Batch",
    "RunResult",
    "TrainConfig",
    "build_model",
    "collate",
    "format_summary",
    "train_one",
    "train_seeds",
    "weight_average",
]
