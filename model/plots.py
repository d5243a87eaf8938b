"""Figures of a training run (matplotlib `Figure` objects rendered by Agg: no display, and no
process-wide backend switch at import)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_confusion(
    cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows = reference) with the counts written in each cell."""
    m = np.asarray(cm, dtype=np.float64)
    rates = m / np.clip(m.sum(1, keepdims=True), 1, None)
    fig = Figure(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{int(m[i, j])}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=8, color=color
            )
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def plot_learning_curves(
    histories: Sequence[Sequence[dict[str, float]]],
    path: str | Path,
    metric: str,
    names: Sequence[str] | None = None,
) -> Path:
    """Training loss and the validation metric per epoch, one line per run (e.g. per seed)."""
    names = list(names) if names is not None else [f"run {k}" for k in range(len(histories))]
    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for k, hist in enumerate(histories):
        epochs = [h["epoch"] for h in hist]
        ax_loss.plot(epochs, [h["train_loss"] for h in hist], label=names[k])
        ax_metric.plot(epochs, [h[metric] for h in hist], label=names[k])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    if len(histories) <= 10:
        ax_metric.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


__all__ = ["plot_confusion", "plot_learning_curves"]
