"""Emotion metrics: weighted accuracy, unweighted average recall (UA), F1, confusion, ECE."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """WA, UA over the classes present in y_true, per-class F1 and the confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = [lab for lab in labels if np.any(y_true == lab)]
    confusion = [[int(np.sum((y_true == t) & (y_pred == p))) for p in labels] for t in labels]
    recalls, f1 = {}, {}
    for lab in present:
        tp = np.sum((y_true == lab) & (y_pred == lab))
        recall = tp / max(np.sum(y_true == lab), 1)
        precision = tp / max(np.sum(y_pred == lab), 1)
        recalls[lab] = float(recall)
        f1[lab] = float(2 * precision * recall / (precision + recall)) if tp else 0.0
    return {
        "n": int(len(y_true)),
        "weighted_accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "unweighted_average_recall": float(np.mean(list(recalls.values()))) if recalls else 0.0,
        "recall": recalls, "f1": f1, "labels": list(labels), "confusion": confusion,
    }


def expected_calibration_error(probs: np.ndarray, y_index: np.ndarray, bins: int = 10) -> float:
    """How far confidence is from accuracy, averaged over confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_index
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """The softmax temperature minimising held-out negative log-likelihood (grid + refine)."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y_index)), y_index].mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 200))
    best = min(grid, key=nll)
    fine = np.linspace(best * 0.9, best * 1.1, 41)
    return float(min(fine, key=nll))
