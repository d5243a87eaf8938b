"""Metrics against values computed by hand on a 6-utterance, 3-class example (and scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from model.metrics import classification_metrics, confusion_matrix, summarize_runs

LABELS = ["a", "b", "c"]
# confusion (rows = reference): a: [2, 1, 0], b: [0, 1, 1], c: [0, 0, 1]
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_references():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_headline_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # per-class F1: a 0.8, b 0.5, c 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    # one-vs-all accuracies 5/6, 4/6, 5/6
    assert m["binary_accuracy"] == pytest.approx(14 / 18)
    # support-weighted F1 of each one-vs-all task (negative and positive class F1s, weighted)
    bin_f1 = [(0.8 * 3 + 6 / 7 * 3) / 6, (0.5 * 2 + 0.75 * 4) / 6, (2 / 3 + 5 * 8 / 9) / 6]
    assert m["binary_f1"] == pytest.approx(np.mean(bin_f1))


def test_per_class_precision_recall_f1_support():
    pc = classification_metrics(Y_TRUE, Y_PRED, LABELS)["per_class"]
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})


@pytest.mark.parametrize("c", [2, 4, 6])
def test_binary_accuracy_identity_holds(c):
    rng = np.random.default_rng(c)
    t, p = rng.integers(0, c, 500), rng.integers(0, c, 500)
    p[:200] = t[:200]
    m = classification_metrics(t, p, [str(i) for i in range(c)])
    assert m["binary_accuracy"] == pytest.approx(1 - 2 * (1 - m["accuracy"]) / c)


def test_f1_and_ua_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    m = classification_metrics(t, p, list("wxyz"))
    assert m["weighted_f1"] == pytest.approx(f1_score(t, p, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    assert m["unweighted_accuracy"] == pytest.approx(recall_score(t, p, average="macro"))
    bin_f1 = np.mean([f1_score(t == k, p == k, average="weighted") for k in range(4)])
    assert m["binary_f1"] == pytest.approx(bin_f1)


def test_class_never_predicted_nor_present_scores_zero_f1_without_error():
    m = classification_metrics([0, 0, 1], [0, 0, 1], ["x", "y", "z"])
    assert m["accuracy"] == 1.0
    assert m["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["unweighted_accuracy"] == 1.0  # over the classes present in the references


def test_summarize_runs_gives_mean_and_sample_std():
    s = summarize_runs([{"accuracy": 0.7}, {"accuracy": 0.8}], keys=["accuracy"])
    assert s["accuracy"]["mean"] == pytest.approx(0.75)
    assert s["accuracy"]["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert s["accuracy"]["n"] == 2
