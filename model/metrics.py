"""Classification metrics of emotion recognition in conversation.

    accuracy             fraction of correct utterances
    unweighted_accuracy  UA: mean per-class recall (over the classes present in the references)
    weighted_f1          per-class F1 weighted by support
    macro_f1             unweighted mean per-class F1
    binary_accuracy      the LPGNet paper's "average binary accuracy": one-vs-all accuracy per class,
                         averaged over the C classes. Every error is wrong in exactly two binary tasks,
                         so it equals 1 - 2 (1 - accuracy) / C.
    binary_f1            the matching "average binary F1" (as in MulT's IEMOCAP evaluation): the
                         support-weighted F1 of each one-vs-all task (both of its classes), averaged
                         over the C classes
    per_class            {label: {precision, recall, f1, support}}
    confusion            C x C counts, rows = reference, columns = prediction
    n                    utterances scored

F1 of a class with no prediction and no reference is 0 (scikit-learn's zero_division=0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

HEADLINE = ("accuracy", "unweighted_accuracy", "weighted_f1", "macro_f1", "binary_accuracy", "binary_f1")


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, c: int
) -> np.ndarray:
    """(C, C) int64 counts; rows = reference class, columns = predicted class."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)


def _div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """All metrics of the module docstring for integer references/predictions in [0, C)."""
    c = len(labels)
    cm = confusion_matrix(y_true, y_pred, c)
    n = int(cm.sum())
    precision, recall, f1, support = _prf(cm)
    present = support > 0
    accuracy = float(np.trace(cm) / n) if n else 0.0

    bin_acc, bin_f1 = [], []
    for k in range(c):
        tp = cm[k, k]
        fn, fp = cm[k].sum() - tp, cm[:, k].sum() - tp
        tn = n - tp - fn - fp
        bcm = np.array([[tn, fp], [fn, tp]])  # negative, positive
        bin_acc.append((tp + tn) / n if n else 0.0)
        _, _, bf1, bsup = _prf(bcm)
        bin_f1.append(float((bf1 * bsup).sum() / n) if n else 0.0)

    return {
        "accuracy": accuracy,
        "unweighted_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()) if c else 0.0,
        "binary_accuracy": float(np.mean(bin_acc)) if c else 0.0,
        "binary_f1": float(np.mean(bin_f1)) if c else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, label in enumerate(labels)
        },
        "confusion": cm.tolist(),
        "labels": list(labels),
        "n": n,
    }


def summarize_runs(
    runs: Sequence[dict[str, Any]], keys: Sequence[str] = HEADLINE
) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof 1; 0 for one run) of each metric over runs (e.g. seeds)."""
    out = {}
    for k in keys:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[k] = {"mean": float(values.mean()), "std": std, "n": len(values)}
    return out


def print_metrics(metrics: dict[str, Any]) -> None:
    """The tables `lpgnet evaluate` prints: headline metrics of what was scored, then per class."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    read, scored = metrics["labelled_read"]["total"], metrics["labelled_scored"]["total"]
    head = Table(
        title=f"{metrics['split']}: {scored} of {read} labelled utterances scored "
        f"({metrics['context']} context, {metrics['modalities']}, {metrics['protocol']}, "
        f"K={metrics['window']})"
    )
    head.add_column("metric")
    head.add_column("value", justify="right")
    for k in HEADLINE:
        head.add_row(k, f"{metrics[k]:.4f}")
    console.print(head)
    per = Table(title="per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for label, m in metrics["per_class"].items():
        per.add_row(label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(per)


__all__ = ["HEADLINE", "classification_metrics", "confusion_matrix", "print_metrics", "summarize_runs"]
