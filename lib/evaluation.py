"""Metrics, the decision threshold and the numbers behind the curves."""

from __future__ import annotations

import logging

import numpy as np
from sklearn import metrics as skm

logger = logging.getLogger(__name__)


def objective_score(
    labels: np.ndarray, probabilities: np.ndarray, objective: str
) -> float:
    """Validation score to maximise: ROC-AUC, PR-AUC, or the negated log loss."""
    if objective == "roc_auc":
        return float(skm.roc_auc_score(labels, probabilities))
    if objective == "pr_auc":
        return float(skm.average_precision_score(labels, probabilities))
    if objective == "log_loss":
        return -float(skm.log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7)))
    raise ValueError(f"unknown objective {objective!r}")


def choose_threshold(
    labels: np.ndarray, probabilities: np.ndarray, policy: str, cost_ratio: float = 1.0
) -> float:
    """Pick the decision threshold on validation data.

    max_f1 and max_accuracy maximise that metric; cost_ratio minimises
    ``cost_ratio * false negatives + false positives``.
    """
    candidates = np.unique(np.round(probabilities, 4))
    candidates = candidates[(candidates > 0.0) & (candidates < 1.0)]
    if candidates.size == 0:
        return 0.5
    order = np.argsort(-probabilities)
    sorted_probabilities = probabilities[order]
    sorted_labels = labels[order].astype(np.int64)
    true_positives_above = np.concatenate([[0], np.cumsum(sorted_labels)])
    # For a threshold t the predicted positives are the rows with p >= t.
    n_predicted = np.searchsorted(-sorted_probabilities, -candidates, side="right")
    tp = true_positives_above[n_predicted]
    fp = n_predicted - tp
    positives = sorted_labels.sum()
    fn = positives - tp
    tn = len(labels) - positives - fp
    if policy == "max_f1":
        score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    elif policy == "max_accuracy":
        score = (tp + tn) / len(labels)
    elif policy == "cost_ratio":
        score = -(cost_ratio * fn + fp)
    else:
        raise ValueError(f"unknown threshold policy {policy!r}")
    return float(candidates[int(np.argmax(score))])


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    weights: np.ndarray | None = None,
) -> dict:
    """Threshold-free metrics, and metrics at 0.5 and at the decision threshold."""
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    result = {
        "roc_auc": float(
            skm.roc_auc_score(labels, probabilities, sample_weight=weights)
        ),
        "pr_auc": float(
            skm.average_precision_score(labels, probabilities, sample_weight=weights)
        ),
        "log_loss": float(skm.log_loss(labels, clipped, sample_weight=weights)),
        "brier": float(
            skm.brier_score_loss(labels, probabilities, sample_weight=weights)
        ),
    }
    for name, cut in (("at_0.5", 0.5), ("at_threshold", threshold)):
        predicted = (probabilities >= cut).astype(int)
        result[name] = {
            "threshold": float(cut),
            "accuracy": float(
                skm.accuracy_score(labels, predicted, sample_weight=weights)
            ),
            "f1": float(skm.f1_score(labels, predicted, sample_weight=weights)),
            "precision": float(
                skm.precision_score(
                    labels, predicted, sample_weight=weights, zero_division=0
                )
            ),
            "recall": float(skm.recall_score(labels, predicted, sample_weight=weights)),
        }
    return result


def test_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    census_weights: np.ndarray,
) -> dict:
    """Unweighted and fnlwgt-weighted metrics on the test file."""
    return {
        "n_records": int(len(labels)),
        "positive_rate": float(labels.mean()),
        "threshold": float(threshold),
        "unweighted": classification_metrics(labels, probabilities, threshold),
        "weighted": classification_metrics(
            labels, probabilities, threshold, census_weights.astype(np.float64)
        ),
    }
