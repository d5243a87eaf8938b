"""Training and evaluation of LPGNet and its baselines on extracted features.

Protocol (`train_seeds`): for each seed, train on the `train` split, score the `valid` split after
every epoch, keep the weights of the best epoch by `select_metric` (early stopping after `patience`
epochs without improvement), then score those weights once on `test`. Nothing is ever chosen on
the test split. Over N seeds the headline metrics are reported as mean +- std; the representative
model written as `model.pt` is the seed with the best validation score.

Training details: AdamW; dialogues batched with padding (padded utterances have both masks off);
modality dropout hides the text or the audio (never both) of a random fraction of the utterances
that have both; input standardisation uses statistics of the training split only.

Output directory: `model.pt` (checkpoint: `save_checkpoint` for LPGNet, `save_baseline` for
baselines), `seed<k>/model.pt` per seed, `metrics.json`, `confusion.png`, `learning_curve.png`.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model.baselines import BaselineCheckpoint, BaselineConfig, build_baseline, save_baseline
from model.checkpoint import Checkpoint, save_checkpoint
from model.encoders.base import EncoderSpec
from model.features import DialogueFeatures, FeatureSet, normalization_stats
from model.losses import LossWeights, lpgnet_loss
from model.lpgnet import LPGNet, LPGNetConfig
from model.metrics import HEADLINE, classification_metrics, summarize_runs

logger = logging.getLogger(__name__)

ModelKind = Literal["lpgnet", "linear", "gru"]
BASELINE_LOSS = LossWeights(task=1.0, ce=0.0, kl=0.0)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelKind = "lpgnet"
    context: Literal["causal", "bidirectional"] = "causal"
    modalities: Literal["both", "text", "audio"] = "both"
    hidden: int = 128  # D; the paper uses 768, a few-MB checkpoint needs ~128-256
    heads: int = 1
    kernel_size: int = 1  # LPGNet projection kernel over utterances
    dropout: float = 0.1
    recency_bias: bool = False
    intra_attention: bool = True
    inter_attention: bool = True
    ffn: bool = True
    gated_fusion: bool = True
    # the paper's loss weights; smoothing 0.1 and modality dropout 0.2 were chosen on validation
    loss: LossWeights = field(default_factory=lambda: LossWeights(label_smoothing=0.1))
    epochs: int = 30
    patience: int = 10  # stop after this many epochs without a better validation score
    batch_size: int = 4  # dialogues per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    modality_dropout: float = 0.2  # fraction of both-modality utterances losing one modality
    class_weights: bool = False  # inverse-frequency weights in the task loss
    select_metric: str = "accuracy"  # validation metric that picks the epoch
    threads: int = 1  # torch intra-op threads (the machines are small and shared)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = self.loss.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if isinstance(d.get("loss"), dict):
            d["loss"] = LossWeights(**d["loss"])
        return cls(**d)


@dataclass
class Batch:
    text: torch.Tensor  # (B, U, Dt)
    audio: torch.Tensor  # (B, U, Da)
    text_mask: torch.Tensor  # (B, U) bool
    audio_mask: torch.Tensor  # (B, U) bool
    labels: torch.Tensor  # (B, U) long, -1 = unlabelled or padding


def collate(dialogues: Sequence[DialogueFeatures]) -> Batch:
    """Pad dialogues to the longest; padded utterances have both masks False and label -1."""
    u = max(len(d) for d in dialogues)

    def pad(x: torch.Tensor, value: float | bool | int = 0) -> torch.Tensor:
        extra = u - x.shape[0]
        if x.dim() == 2:
            return torch.nn.functional.pad(x, (0, 0, 0, extra), value=value)
        return torch.nn.functional.pad(x, (0, extra), value=value)

    return Batch(
        torch.stack([pad(d.text) for d in dialogues]),
        torch.stack([pad(d.audio) for d in dialogues]),
        torch.stack([pad(d.text_mask, False) for d in dialogues]),
        torch.stack([pad(d.audio_mask, False) for d in dialogues]),
        torch.stack([pad(d.labels, -1) for d in dialogues]),
    )


def build_model(cfg: TrainConfig, text_dim: int, audio_dim: int, num_classes: int) -> nn.Module:
    if cfg.model == "lpgnet":
        return LPGNet(
            LPGNetConfig(
                text_dim=text_dim,
                audio_dim=audio_dim,
                hidden=cfg.hidden,
                num_classes=num_classes,
                heads=cfg.heads,
                kernel_size=cfg.kernel_size,
                dropout=cfg.dropout,
                context=cfg.context,
                modalities=cfg.modalities,
                intra_attention=cfg.intra_attention,
                inter_attention=cfg.inter_attention,
                ffn=cfg.ffn,
                gated_fusion=cfg.gated_fusion,
                recency_bias=cfg.recency_bias,
            )
        )
    return build_baseline(
        BaselineConfig(
            kind=cfg.model,
            text_dim=text_dim,
            audio_dim=audio_dim,
            hidden=cfg.hidden,
            num_classes=num_classes,
            context=cfg.context,
            modalities=cfg.modalities,
            dropout=cfg.dropout,
        )
    )


def drop_modalities(
    text_mask: torch.Tensor, audio_mask: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide text or audio (each half the time) of a fraction `p` of the utterances that have both."""
    both = text_mask & audio_mask
    r = torch.rand(text_mask.shape, generator=generator)
    drop_text = both & (r < p / 2)
    drop_audio = both & (r >= p / 2) & (r < p)
    return text_mask & ~drop_text, audio_mask & ~drop_audio


@torch.no_grad()
def predict(
    model: nn.Module, dialogues: Sequence[DialogueFeatures], batch_size: int = 16
) -> list[torch.Tensor]:
    """Per dialogue, the fused probabilities (U, C), in order."""
    model.eval()
    out = []
    for s in range(0, len(dialogues), batch_size):
        chunk = dialogues[s : s + batch_size]
        b = collate(chunk)
        probs = torch.softmax(model(b.text, b.audio, b.text_mask, b.audio_mask).logits, -1)  # (B, U, C)
        out += [probs[i, : len(d)] for i, d in enumerate(chunk)]
    return out


def evaluate_model(model: nn.Module, features: FeatureSet) -> dict[str, Any]:
    """All metrics of `model.metrics` on the labelled utterances of `features`."""
    probs = predict(model, features.dialogues)
    y_true, y_pred = [], []
    for d, p in zip(features.dialogues, probs, strict=True):
        keep = d.labels >= 0
        y_true.append(d.labels[keep])
        y_pred.append(p.argmax(-1)[keep])
    t = torch.cat(y_true).numpy() if y_true else np.zeros(0, dtype=np.int64)
    pr = torch.cat(y_pred).numpy() if y_pred else np.zeros(0, dtype=np.int64)
    return classification_metrics(t, pr, features.labels)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class RunResult:
    seed: int
    model: nn.Module
    selected_epoch: int  # 1-based
    history: list[dict[str, float]]  # per epoch: train loss, validation metrics
    valid: dict[str, Any]
    test: dict[str, Any] | None
    seconds: float


def train_one(features: FeatureSet, cfg: TrainConfig, seed: int = 0, progress: bool = False) -> RunResult:
    """Train one model on features' train split, select on valid, score test once."""
    torch.set_num_threads(cfg.threads)
    _seed_everything(seed)
    train, valid, test = features.split("train"), features.split("valid"), features.split("test")
    if not train.dialogues or not valid.dialogues:
        raise ValueError("training needs non-empty train and valid splits")
    model = build_model(cfg, features.text_dim, features.audio_dim, len(features.labels))
    model.set_normalization(normalization_stats(train))  # type: ignore[operator]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = (
        cfg.loss
        if cfg.model == "lpgnet"
        else replace(BASELINE_LOSS, label_smoothing=cfg.loss.label_smoothing)
    )
    class_weight = None
    if cfg.class_weights:
        y = torch.cat([d.labels for d in train.dialogues])
        counts = torch.bincount(y[y >= 0], minlength=len(features.labels)).float().clamp(min=1)
        class_weight = counts.sum() / (len(counts) * counts)
    gen = torch.Generator().manual_seed(seed)

    start, best_score, best_state, best_epoch, history, stale = time.time(), -1.0, None, 0, [], 0
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.model} seed {seed}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = list(range(len(train.dialogues)))
        random.shuffle(order)
        losses = []
        for s in range(0, len(order), cfg.batch_size):
            b = collate([train.dialogues[i] for i in order[s : s + cfg.batch_size]])
            tm, am = b.text_mask, b.audio_mask
            if cfg.modality_dropout > 0 and cfg.modalities == "both":
                tm, am = drop_modalities(tm, am, cfg.modality_dropout, gen)
            out = model(b.text, b.audio, tm, am)
            loss, _ = lpgnet_loss(out, b.labels, tm, am, weights, class_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        v = evaluate_model(model, valid)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses))} | {k: v[k] for k in HEADLINE})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid=f"{v[cfg.select_metric]:.4f}")
        if v[cfg.select_metric] > best_score:
            best_score, best_epoch, stale = v[cfg.select_metric], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    valid_metrics = evaluate_model(model, valid)
    test_metrics = evaluate_model(model, test) if test.dialogues else None
    return RunResult(seed, model, best_epoch, history, valid_metrics, test_metrics, time.time() - start)


def _headline(m: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if m is None else {k: m[k] for k in (*HEADLINE, "n", "per_class")}


def make_checkpoint(
    run: RunResult,
    features: FeatureSet,
    profile: str,
    training: dict[str, Any],
) -> Checkpoint | BaselineCheckpoint:
    encoders: dict[str, EncoderSpec] = {m: s for m, s in features.specs.items() if s is not None}
    if isinstance(run.model, LPGNet):
        return Checkpoint(
            model=run.model, labels=features.labels, encoders=encoders, profile=profile, training=training
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
    runs: list[RunResult] = []
    split_sizes = {
        s: {
            "dialogues": len(features.split(s).dialogues),
            "labelled": sum(int((d.labels >= 0).sum()) for d in features.split(s).dialogues),
        }
        for s in ("train", "valid", "test")
    }
    for seed in tqdm(seeds, desc="seeds", disable=not progress or len(seeds) < 2):
        run = train_one(features, cfg, seed, progress)
        runs.append(run)
        training = {
            "seed": seed,
            "selected_epoch": run.selected_epoch,
            "select_metric": cfg.select_metric,
            "train_config": cfg.to_dict(),
            "data": data_info or {},
            "splits": split_sizes,
            "valid": _headline(run.valid),
            "test": _headline(run.test),
            "history": run.history,
        }
        save_any(make_checkpoint(run, features, profile, training), out / f"seed{seed}" / "model.pt")
        if progress:
            t = run.test or {}
            tqdm.write(
                f"seed {seed}: epoch {run.selected_epoch}, valid {cfg.select_metric} "
                f"{run.valid[cfg.select_metric]:.4f}, test acc {t.get('accuracy', float('nan')):.4f} "
                f"({run.seconds:.0f}s)"
            )
    best = max(runs, key=lambda r: r.valid[cfg.select_metric])
    shutil.copyfile(out / f"seed{best.seed}" / "model.pt", out / "model.pt")
    result: dict[str, Any] = {
        "model": cfg.model,
        "profile": profile,
        "labels": features.labels,
        "encoders": {m: (s.to_dict() if s else None) for m, s in features.specs.items()},
        "train_config": cfg.to_dict(),
        "data": data_info or {},
        "splits": split_sizes,
        "seeds": list(seeds),
        "representative_seed": best.seed,
        "representative_rule": f"best validation {cfg.select_metric}",
        "valid": summarize_runs([r.valid for r in runs]),
        "runs": [
            {
                "seed": r.seed,
                "selected_epoch": r.selected_epoch,
                "seconds": round(r.seconds, 1),
                "valid": _headline(r.valid),
                "test": _headline(r.test),
            }
            for r in runs
        ],
    }
    if all(r.test is not None for r in runs):
        result["test"] = summarize_runs([r.test for r in runs if r.test is not None])
        result["representative_test"] = _headline(best.test)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    if plots:
        from model.plots import plot_confusion, plot_learning_curves

        shown = best.test or best.valid
        which = "test (session 5)" if best.test else "validation"
        plot_confusion(
            shown["confusion"],
            features.labels,
            out / "confusion.png",
            f"{cfg.model}, seed {best.seed}, {which}",
        )
        plot_learning_curves(
            [r.history for r in runs],
            out / "learning_curve.png",
            cfg.select_metric,
            [f"seed {r.seed}" for r in runs],
        )
    return result


def format_summary(result: dict[str, Any]) -> str:
    lines = []
    for split in ("valid", "test"):
        if split in result:
            parts = [f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in result[split].items()]
            lines.append(f"{split}: " + ", ".join(parts))
    return "\n".join(lines)


__all__ = [
    "Batch",
    "RunResult",
    "TrainConfig",
    "build_model",
    "collate",
    "drop_modalities",
    "evaluate_model",
    "format_summary",
    "predict",
    "train_one",
    "train_seeds",
]
