"""The metric definitions: what a seed's run is measured by.

From the per-epoch history: the final and best accuracies, the convergence
and plateau epochs. From the trained network's test probabilities: per-class
recall, macro-F1 and calibration (ECE, NLL, Brier score, reliability bins).
numpy only, so the report can use the same definitions without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15
# A run has converged at the first epoch whose test accuracy is within this
# much (0.5 percentage points) of the best test accuracy of the run.
CONVERGENCE_TOLERANCE = 0.005
# A run's training loss has plateaued at the first epoch after which it never
# falls more than this fraction (1%) below that epoch's value.
PLATEAU_TOLERANCE = 0.01
# A run is "at chance" when its test accuracy never rises this far above chance
# (1 / classes), or falls back below it by the end: lr 0.1 with momentum 0.9
# sometimes kills this small ReLU network in its first steps.
CHANCE_MARGIN = 0.05
# Per-seed numbers of a run, summarised over seeds with mean, std and 95% CI.
SEED_METRICS = (
    "final_test_acc",
    "best_test_acc",
    "final_train_acc",
    "final_train_loss",
    "final_test_loss",
    "convergence_epoch",
    "plateau_epoch",
    "macro_f1",
    "ece",
    "nll",
    "brier",
)


@dataclass(frozen=True)
class TestEvaluation:
    predictions: np.ndarray  # predicted class per test image
    per_class_recall: list[float]
    macro_f1: float
    ece: float
    nll: float
    brier: float
    reliability: list[dict[str, Any]]  # one row per confidence bin


def per_class_recall_and_macro_f1(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> tuple[list[float], float]:
    recalls, f1s = [], []
    for label in range(num_classes):
        true_positive = int(np.sum((predictions == label) & (labels == label)))
        actual = int(np.sum(labels == label))
        predicted = int(np.sum(predictions == label))
        recall = true_positive / actual if actual else 0.0
        precision = true_positive / predicted if predicted else 0.0
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return recalls, float(np.mean(f1s))


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Equal-width bins over (0, 1] of the top-class probability (bin i holds
    i/bins < confidence <= (i+1)/bins; a confidence of 0 goes to bin 0)."""
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "bin": b,
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(rows: list[dict[str, Any]]) -> float:
    """Sum over bins of (share of images in the bin) * |accuracy - confidence|."""
    total = sum(row["count"] for row in rows)
    return float(
        sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows if row["count"])
    )


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> TestEvaluation:
    """`probabilities` (N, C): softmax outputs in float64; `labels` (N,)."""
    num_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    rows = calibration_bins(confidence, predictions == labels)
    recalls, macro_f1 = per_class_recall_and_macro_f1(labels, predictions, num_classes)
    true_class = probabilities[np.arange(len(labels)), labels]
    one_hot = np.eye(num_classes)[labels]
    return TestEvaluation(
        predictions=predictions,
        per_class_recall=recalls,
        macro_f1=macro_f1,
        ece=expected_calibration_error(rows),
        nll=float(-np.log(np.clip(true_class, 1e-12, None)).mean()),
        brier=float(((probabilities - one_hot) ** 2).sum(axis=1).mean()),
        reliability=rows,
    )


def convergence_epoch(test_accuracy: Sequence[float]) -> int:
    best = max(test_accuracy)
    return next(epoch for epoch, acc in enumerate(test_accuracy, 1) if acc >= best - CONVERGENCE_TOLERANCE)


def plateau_epoch(train_loss: Sequence[float]) -> int:
    return next(
        epoch
        for epoch, loss in enumerate(train_loss, 1)
        if min(train_loss[epoch - 1 :]) >= loss * (1 - PLATEAU_TOLERANCE)
    )


@dataclass(frozen=True)
class Curves:
    """One seed's per-epoch numbers, epoch 1 first."""

    train_loss: Sequence[float]
    train_acc: Sequence[float]
    test_loss: Sequence[float]
    test_acc: Sequence[float]


def at_chance(test_accuracy: Sequence[float], num_classes: int) -> str | None:
    """Why a run counts as stuck at chance, or None when it learned."""
    level = 1 / num_classes + CHANCE_MARGIN
    if max(test_accuracy) < level:
        return "never left chance"
    if test_accuracy[-1] < level:
        return "collapsed to chance"
    return None


def seed_metrics(curves: Curves, evaluation: TestEvaluation) -> dict[str, Any]:
    """The numbers of one seed's run (SEED_METRICS), and whether it stayed at chance."""
    return {
        "final_test_acc": curves.test_acc[-1],
        "best_test_acc": max(curves.test_acc),
        "final_train_acc": curves.train_acc[-1],
        "final_train_loss": curves.train_loss[-1],
        "final_test_loss": curves.test_loss[-1],
        "convergence_epoch": convergence_epoch(curves.test_acc),
        "plateau_epoch": plateau_epoch(curves.train_loss),
        "macro_f1": evaluation.macro_f1,
        "ece": evaluation.ece,
        "nll": evaluation.nll,
        "brier": evaluation.brier,
        "at_chance": at_chance(curves.test_acc, len(evaluation.per_class_recall)),
    }
