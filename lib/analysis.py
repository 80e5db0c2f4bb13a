"""Figures and tables a person reads before trusting the model.

Every figure is saved as PNG under ``<run_dir>/figures`` and returned for display.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files (and inline in notebooks)
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from lib.data import LABEL_COLUMN  # noqa: E402

logger = logging.getLogger(__name__)


def load_results(run_dir: Path) -> tuple[dict, pl.DataFrame]:
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    predictions = pl.read_parquet(Path(run_dir) / "test_predictions.parquet")
    return metrics, predictions


def save_figure(figure, run_dir: Path, name: str) -> Path:
    folder = Path(run_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    logger.info("Saved figure %s", path)
    return path


def metrics_table(metrics: dict) -> pl.DataFrame:
    """Test metrics, unweighted and fnlwgt-weighted, one row per metric."""
    rows = []
    for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        rows.append((name, metrics["unweighted"][name], metrics["weighted"][name]))
    for cut in ("at_0.5", "at_threshold"):
        for name in ("accuracy", "f1", "precision", "recall"):
            threshold = metrics["unweighted"][cut]["threshold"]
            rows.append(
                (
                    f"{name} (threshold {threshold:.3f})",
                    metrics["unweighted"][cut][name],
                    metrics["weighted"][cut][name],
                )
            )
    return pl.DataFrame(
        rows, schema=["metric", "unweighted", "weighted (fnlwgt)"], orient="row"
    ).with_columns(pl.col("unweighted", "weighted (fnlwgt)").round(4))


def plot_roc_and_pr(predictions: pl.DataFrame, run_dir: Path):
    labels = predictions[LABEL_COLUMN].to_numpy()
    probabilities = predictions["probability"].to_numpy()
    figure, (roc_axes, pr_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    fpr, tpr, _ = skm.roc_curve(labels, probabilities)
    auc = skm.roc_auc_score(labels, probabilities)
    roc_axes.plot(fpr, tpr, label=f"TabTransformer (AUC {auc:.3f})")
    roc_axes.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    roc_axes.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title="ROC curve, test set",
    )
    roc_axes.legend(loc="lower right")
    precision, recall, _ = skm.precision_recall_curve(labels, probabilities)
    average_precision = skm.average_precision_score(labels, probabilities)
    pr_axes.plot(
        recall, precision, label=f"TabTransformer (AP {average_precision:.3f})"
    )
    pr_axes.axhline(
        labels.mean(), ls="--", color="grey", label=f"base rate {labels.mean():.3f}"
    )
    pr_axes.set(
        xlabel="Recall", ylabel="Precision", title="Precision-recall curve, test set"
    )
    pr_axes.legend(loc="lower left")
    figure.tight_layout()
    save_figure(figure, run_dir, "roc_pr_curves")
    return figure
