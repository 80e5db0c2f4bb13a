"""Figures and tables a person reads before trusting the model.

Every figure is saved as PNG under ``<run_dir>/figures`` and returned as a
:class:`SavedFigure`, which a notebook shows inline. Tables are polars frames
rounded to :data:`DECIMALS` places, so that a re-run on the same machine prints
the same digits, and :func:`show` renders them whole as Markdown. Nothing here
fits or chooses anything on the test set: the decision threshold is the one
chosen on validation data and stored in the model artifact, and the test set only
shows where it lands.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
from sklearn import metrics as skm

from lib.data import LABEL_COLUMN, TEST_FILE, load_adult, read_prepared

logger = logging.getLogger(__name__)

FIGURES_DIR = "figures"
MODEL_CARD_FILE = "model_card.md"
PREDICTIONS_FILE = "test_predictions.parquet"
GROUP_COLUMNS = ("sex", "race")
FNLWGT_USES = {
    "drop": "not a model input",
    "feature": "a numeric model input",
    "weight": "a sample weight in training",
}
# Digits shown in tables: enough to compare models, few enough to be stable.
DECIMALS = 3
# Below this many complete trials, importances and slices are anecdotes.
FEW_TRIALS = 10
CLASS_NAMES = ("<=50K", ">50K")
DPI = 110


# --- what the notebook displays -----------------------------------------------


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to disk; notebooks display the PNG that was written."""

    path: Path

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()

    def __repr__(self) -> str:
        return f"{FIGURES_DIR}/{self.path.name}"


@dataclass(frozen=True)
class Note:
    """Markdown text that a notebook renders, e.g. why a plot was left out."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def show(frame: pl.DataFrame) -> Note:
    """A table as Markdown: every row shown, numbers to DECIMALS places.

    Polars' own display elides middle rows and wraps long cells, and its layout
    changes between versions; plain Markdown is whole and stable to compare.
    """
    return Note(markdown_table(frame))


def save_figure(figure: Figure, run_dir: Path, name: str) -> SavedFigure:
    folder = Path(run_dir) / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    # Figures made through pyplot (Optuna's) would otherwise be shown a second time
    # by the inline backend and kept in memory until the kernel ends.
    import matplotlib.pyplot as plt

    plt.close(figure)
    logger.info("Saved figure %s", path)
    return SavedFigure(path)


def list_figures(run_dir: Path) -> Note:
    names = sorted(p.name for p in (Path(run_dir) / FIGURES_DIR).glob("*.png"))
    lines = [f"- `{FIGURES_DIR}/{name}`" for name in names]
    return Note(f"{len(names)} figures in the run folder:\n\n" + "\n".join(lines))


# --- inputs -------------------------------------------------------------------


@dataclass
class Results:
    """What the final model produced: test metrics, predictions and its manifest."""

    run_dir: Path
    metrics: dict
    predictions: pl.DataFrame
    manifest: dict

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def labels(self) -> np.ndarray:
        return self.predictions[LABEL_COLUMN].to_numpy().astype(np.int64)

    @property
    def probabilities(self) -> np.ndarray:
        return self.predictions["probability"].to_numpy().astype(np.float64)


def load_results(run_dir: Path) -> Results:
    """Read metrics.json, the test predictions and the artifact's manifest."""
    run_dir = Path(run_dir)
    paths = {
        "metrics": run_dir / "metrics.json",
        "predictions": run_dir / PREDICTIONS_FILE,
        "manifest": run_dir / "model" / "manifest.json",
    }
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} has no final model results ({', '.join(missing)} missing); "
            "run notebooks/02_tuning into this run folder first"
        )
    predictions = pl.read_parquet(paths["predictions"])
    needed = {LABEL_COLUMN, "probability", *GROUP_COLUMNS}
    if not needed <= set(predictions.columns):
        raise ValueError(
            f"{paths['predictions']} lacks columns "
            f"{sorted(needed - set(predictions.columns))}; it was written by an "
            "older version: rerun notebooks/02_tuning"
        )
    return Results(
        run_dir=run_dir,
        metrics=json.loads(paths["metrics"].read_text()),
        predictions=predictions,
        manifest=json.loads(paths["manifest"].read_text()),
    )


def load_study(settings, run_dir: Path):
    """The run's Optuna study, from whatever storage the settings name."""
    import optuna

    from lib import storage

    study_storage = storage.create_storage(settings.study, run_dir)
    try:
        return optuna.load_study(study_name=settings.study.name, storage=study_storage)
    except KeyError as error:
        raise ValueError(
            f"no study named {settings.study.name!r} in "
            f"{storage.resolve_storage_url(settings.study, run_dir)}; run "
            "notebooks/02_tuning first, or pass the STUDY_NAME it used"
        ) from error


def load_model(run_dir: Path):
    from lib.artifact import load_artifact

    return load_artifact(Path(run_dir) / "model")


def load_test_frame(settings, run_dir: Path) -> pl.DataFrame:
    """The parsed test file: from the run's data folder, else parsed again."""
    if (Path(run_dir) / "data" / "row_ledger.json").is_file():
        return read_prepared(Path(run_dir)).test
    # In sagemaker mode the preprocessing ran remotely; adult.test is deterministic
    # to parse, so parsing it here yields the same records.
    logger.info("No prepared data in %s: parsing %s again", run_dir, TEST_FILE)
    frames, _ = load_adult(settings.data)
    return frames[TEST_FILE]


# --- the study ----------------------------------------------------------------


@contextmanager
def _quiet_optuna():
    """Optuna's plots: keep their warnings and their global style change inside."""
    import matplotlib
    from optuna.exceptions import ExperimentalWarning

    # Optuna switches pyplot to the ggplot style for good; rc_context undoes that.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # A hyperparameter with one value in every trial gives a flat axis.
        warnings.filterwarnings("ignore", message="Attempting to set identical")
        yield


def _complete_trials(study):
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _objective_label(study) -> str:
    return study.user_attrs.get("objective", "objective value")


def study_summary(study) -> pl.DataFrame:
    """Trials by state and the best validation score."""
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
    complete = _complete_trials(study)
    best = max(complete, key=lambda t: t.value) if complete else None
    return pl.DataFrame(
        {
            "study": [study.study_name],
            "trials": [sum(counts.values())],
            "complete": [counts.get("complete", 0)],
            "pruned": [counts.get("pruned", 0)],
            "failed": [counts.get("fail", 0)],
            "best trial": [best.number if best else None],
            "best score": [round(best.value, DECIMALS) if best else None],
            "objective": [_objective_label(study)],
        }
    )


def importance_problem(study) -> str | None:
    """Why parameter importances cannot be computed, or None when they can."""
    complete = _complete_trials(study)
    if len(complete) < 2:
        return (
            f"Parameter importances need at least 2 complete trials; study "
            f"`{study.study_name}` has {len(complete)}. Raise `budget.n_trials`."
        )
    if not _varying_params(complete):
        return (
            "Parameter importances need hyperparameters that differ between "
            f"trials; all {len(complete)} complete trials used the same values."
        )
    return None


def _varying_params(trials) -> list[str]:
    names = sorted({name for trial in trials for name in trial.params})
    return [
        name for name in names if len({repr(t.params.get(name)) for t in trials}) > 1
    ]


def param_importances(study, seed: int) -> dict[str, float]:
    """fANOVA importances (seeded), or {} when they cannot be computed."""
    if importance_problem(study) is not None:
        return {}
    import optuna

    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with _quiet_optuna():
        return optuna.importance.get_param_importances(study, evaluator=evaluator)


def ranked_params(study, limit: int, seed: int) -> list[str]:
    """The hyperparameters worth plotting: most important first, else those varied."""
    ranked = list(param_importances(study, seed))
    if not ranked:
        ranked = _varying_params(_complete_trials(study))
    return ranked[:limit]


def _few_trials_suffix(study) -> str:
    count = len(_complete_trials(study))
    return f" ({count} complete trials: indicative only)" if count < FEW_TRIALS else ""


def plot_optimization_history(study, run_dir: Path) -> SavedFigure | Note:
    from optuna.visualization import matplotlib as optuna_plots

    if not _complete_trials(study):
        return Note("No complete trial yet: there is no history to plot.")
    with _quiet_optuna():
        axes = optuna_plots.plot_optimization_history(
            study, target_name=_objective_label(study)
        )
        axes.figure.set_size_inches(8, 4.5)
        axes.set(
            title=f"Optimisation history of study {study.study_name}",
            xlabel="Trial number",
            ylabel=_objective_label(study),
        )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        return save_figure(axes.figure, run_dir, "study_history")


def plot_learning_curves(study, run_dir: Path) -> SavedFigure | Note:
    """The validation score after every epoch, one line per trial (pruning shows)."""
    from optuna.visualization import matplotlib as optuna_plots

    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return Note("No trial reported a score per epoch: no learning curves.")
    with _quiet_optuna():
        axes = optuna_plots.plot_intermediate_values(study)
        axes.figure.set_size_inches(8, 4.5)
        axes.set(
            title="Validation score per epoch, one line per trial",
            xlabel="Epoch",
            ylabel=_objective_label(study),
        )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        return save_figure(axes.figure, run_dir, "study_learning_curves")


def plot_param_importances(
    study, run_dir: Path, analysis_settings
) -> SavedFigure | Note:
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as optuna_plots

    problem = importance_problem(study)
    if problem:
        return Note(problem)
    with _quiet_optuna():
        axes = optuna_plots.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=analysis_settings.seed)
        )
        n_params = len(axes.get_yticklabels())
        axes.figure.set_size_inches(8, max(3.0, 0.3 * n_params + 1.2))
        axes.set_title("", loc="left")  # Optuna's own title, replaced below
        axes.set_title("Hyperparameter importance (fANOVA)" + _few_trials_suffix(study))
        axes.set(
            xlabel=f"Share of the variance of the {_objective_label(study)}",
            ylabel="Hyperparameter",
        )
        if axes.get_legend() is not None:
            axes.get_legend().remove()  # one objective: the legend says nothing
        return save_figure(axes.figure, run_dir, "study_param_importances")


def plot_parallel_coordinates(
    study, run_dir: Path, analysis_settings
) -> SavedFigure | Note:
    from optuna.visualization import matplotlib as optuna_plots

    params = ranked_params(
        study, analysis_settings.max_plotted_params, analysis_settings.seed
    )
    if len(_complete_trials(study)) < 2 or not params:
        return Note(
            "Parallel coordinates need 2 complete trials that differ in at least "
            "one hyperparameter."
        )
    with _quiet_optuna():
        axes = optuna_plots.plot_parallel_coordinate(
            study, params=params, target_name=_objective_label(study)
        )
        figure = axes.figure
        figure.set_size_inches(max(8, 1.6 * (len(params) + 1)), 5)
        axes.set_title(
            f"Parallel coordinates of the {len(params)} leading hyperparameters"
            + _few_trials_suffix(study),
            y=1.03,
        )
        axes.set_xlabel("Hyperparameter (each axis has its own scale)")
        axes.tick_params(axis="x", labelrotation=20)
        _readable_trial_colours(figure)
        return save_figure(figure, run_dir, "study_parallel_coordinates")


def plot_slices(study, run_dir: Path, analysis_settings) -> SavedFigure | Note:
    from optuna.visualization import matplotlib as optuna_plots

    params = ranked_params(
        study, analysis_settings.max_plotted_params, analysis_settings.seed
    )
    if not _complete_trials(study) or not params:
        return Note("Slice plots need complete trials that differ in a hyperparameter.")
    with _quiet_optuna():
        axes = np.atleast_1d(
            optuna_plots.plot_slice(
                study, params=params, target_name=_objective_label(study)
            )
        )
        figure = axes[0].figure
        figure.set_size_inches(max(6, 2.4 * len(axes)), 4)
        figure.suptitle(
            "Objective against each leading hyperparameter" + _few_trials_suffix(study)
        )
        for each in axes:
            each.tick_params(axis="x", labelrotation=30)
            _tidy_log_axis(each)
        _readable_trial_colours(figure)
        return save_figure(figure, run_dir, "study_slices")


def _tidy_log_axis(axes) -> None:
    """Log axes within one decade label every minor tick on top of each other."""
    if axes.get_xscale() != "log":
        return
    low, high = sorted(axes.get_xlim())
    if high / low < 10:
        axes.xaxis.set_major_locator(MaxNLocator(nbins=3))
        axes.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _readable_trial_colours(figure) -> None:
    """Optuna colours trials from white up: the worst one vanishes on the background."""
    for axes in figure.axes:
        for collection in axes.collections:
            if collection.get_array() is not None:
                collection.set_cmap("viridis")


# --- curves and calibration ---------------------------------------------------


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
    ).with_columns(pl.col("unweighted", "weighted (fnlwgt)").round(DECIMALS))


def _rates_at(labels: np.ndarray, probabilities: np.ndarray, threshold: float):
    predicted = probabilities >= threshold
    positives = max(int(labels.sum()), 1)
    negatives = max(int((1 - labels).sum()), 1)
    true_positive_rate = float((predicted & (labels == 1)).sum() / positives)
    false_positive_rate = float((predicted & (labels == 0)).sum() / negatives)
    n_predicted = int(predicted.sum())
    precision = float((predicted & (labels == 1)).sum() / max(n_predicted, 1))
    return false_positive_rate, true_positive_rate, precision


def plot_roc_and_pr(results: Results, run_dir: Path) -> SavedFigure:
    """ROC and precision-recall curves with the operating points marked."""
    labels, probabilities = results.labels, results.probabilities
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    roc_axes, pr_axes = figure.subplots(1, 2)
    fpr, tpr, _ = skm.roc_curve(labels, probabilities)
    auc = skm.roc_auc_score(labels, probabilities)
    roc_axes.plot(fpr, tpr, label=f"TabTransformer (AUC {auc:.3f})")
    roc_axes.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    precision, recall, _ = skm.precision_recall_curve(labels, probabilities)
    average_precision = skm.average_precision_score(labels, probabilities)
    pr_axes.plot(
        recall, precision, label=f"TabTransformer (AP {average_precision:.3f})"
    )
    base_rate = labels.mean()
    pr_axes.axhline(
        base_rate, ls="--", color="grey", label=f"base rate {base_rate:.3f}"
    )
    for cut, marker, name in (
        (results.threshold, "o", "decision threshold"),
        (0.5, "s", "threshold"),
    ):
        point_fpr, point_tpr, point_precision = _rates_at(labels, probabilities, cut)
        label = f"{name} {cut:.3f}"
        roc_axes.plot(point_fpr, point_tpr, marker, color="black", label=label)
        pr_axes.plot(point_tpr, point_precision, marker, color="black", label=label)
    roc_axes.set(
        xlabel="False positive rate",
        ylabel="True positive rate (recall)",
        title=f"ROC curve, test set (n={len(labels):,})",
    )
    pr_axes.set(
        xlabel="Recall",
        ylabel="Precision",
        title="Precision-recall curve, test set",
        ylim=(0, 1.02),
    )
    roc_axes.legend(loc="lower right")
    # Between the base-rate line and the curve, where nothing is drawn.
    pr_axes.legend(loc="lower left", bbox_to_anchor=(0.0, 0.27))
    return save_figure(figure, run_dir, "roc_pr_curves")


def calibration_bins(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int
) -> pl.DataFrame:
    """Equal-width probability bins: records, mean prediction, observed rate."""
    if n_bins < 1:
        raise ValueError(f"calibration needs at least one bin, got n_bins={n_bins}")
    index = np.minimum((probabilities * n_bins).astype(np.int64), n_bins - 1)
    rows = []
    for position in range(n_bins):
        members = index == position
        count = int(members.sum())
        rows.append(
            {
                "bin": f"[{position / n_bins:.2f}, {(position + 1) / n_bins:.2f})",
                "records": count,
                "mean predicted": float(probabilities[members].mean())
                if count
                else None,
                "observed rate": float(labels[members].mean()) if count else None,
            }
        )
    return pl.DataFrame(rows)


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int
) -> float:
    """Record-weighted mean gap between predicted and observed rates over bins."""
    bins = calibration_bins(labels, probabilities, n_bins).drop_nulls()
    gaps = (bins["mean predicted"] - bins["observed rate"]).abs()
    return float((gaps * bins["records"]).sum() / len(labels))


def calibration_summary(results: Results, n_bins: int) -> pl.DataFrame:
    labels, probabilities = results.labels, results.probabilities
    bins = calibration_bins(labels, probabilities, n_bins).drop_nulls()
    gaps = (bins["mean predicted"] - bins["observed rate"]).abs()
    return pl.DataFrame(
        {
            "expected calibration error": [
                expected_calibration_error(labels, probabilities, n_bins)
            ],
            "largest bin gap": [float(gaps.max())],
            "mean predicted": [float(probabilities.mean())],
            "observed rate": [float(labels.mean())],
            "Brier score": [float(skm.brier_score_loss(labels, probabilities))],
            "bins": [n_bins],
        }
    ).with_columns(pl.exclude("bins").round(DECIMALS))


def wilson_interval(successes, trials, z: float = 1.96):
    """95% Wilson score interval for a proportion; arrays in, (low, high) out."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.maximum(np.asarray(trials, dtype=np.float64), 1.0)
    rate = successes / trials
    denominator = 1 + z**2 / trials
    centre = (rate + z**2 / (2 * trials)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2))
    return centre - half / denominator, centre + half / denominator


def plot_calibration(results: Results, run_dir: Path, n_bins: int) -> SavedFigure:
    """Reliability diagram above the histogram of predicted probabilities."""
    labels, probabilities = results.labels, results.probabilities
    bins = calibration_bins(labels, probabilities, n_bins).drop_nulls()
    ece = expected_calibration_error(labels, probabilities, n_bins)
    figure = Figure(figsize=(6.5, 7), layout="constrained")
    diagram, histogram = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    observed = bins["observed rate"].to_numpy()
    records = bins["records"].to_numpy()
    low, high = wilson_interval(observed * records, records)
    diagram.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    diagram.errorbar(
        bins["mean predicted"].to_numpy(),
        observed,
        yerr=[observed - low, high - observed],
        fmt="o-",
        capsize=3,
        label=f"TabTransformer (ECE {ece:.3f})",
    )
    diagram.set(
        ylabel="Observed share earning >50K",
        title=f"Reliability diagram, test set ({n_bins} equal-width bins, 95% CI)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    diagram.legend(loc="upper left")
    edges = np.linspace(0, 1, n_bins + 1)
    for label, colour in ((0, "tab:blue"), (1, "tab:orange")):
        histogram.hist(
            probabilities[labels == label],
            bins=edges,
            alpha=0.6,
            color=colour,
            label=f"actual {CLASS_NAMES[label]}",
        )
    histogram.set(
        xlabel="Predicted probability of >50K", ylabel="Records (log)", yscale="log"
    )
    histogram.legend(loc="upper right", fontsize="small")
    return save_figure(figure, run_dir, "calibration")


# --- the decision threshold ---------------------------------------------------


def describe_threshold(results: Results, settings) -> Note:
    """Where the decision threshold comes from, in words."""
    summary = results.manifest.get("summary", {})
    policy = summary.get("threshold_policy", settings.threshold.policy)
    rules = {
        "max_f1": "the cut that maximises F1",
        "max_accuracy": "the cut that maximises accuracy",
        "cost_ratio": (
            "the cut that minimises `cost_ratio` x false negatives + false "
            f"positives (cost_ratio {settings.threshold.cost_ratio:g} in this run's "
            "settings)"
        ),
    }
    rule = rules.get(policy, f"policy `{policy}`")
    trial = summary.get("best_trial", "?")
    at_threshold = results.metrics["unweighted"]["at_threshold"]
    return Note(
        f"Decision threshold **{results.threshold:.3f}** (policy `{policy}`): "
        f"{rule} on the validation predictions of trial {trial}'s model, which "
        "was trained on the training split only. The final model, retrained on "
        "training + validation, keeps that threshold unchanged; it is stored in "
        "`model/manifest.json` and used by the server. On the test set it gives "
        f"precision {at_threshold['precision']:.3f}, recall "
        f"{at_threshold['recall']:.3f} and F1 {at_threshold['f1']:.3f}."
    )


def threshold_sweep(
    labels: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float]
) -> pl.DataFrame:
    """Precision, recall, F1 and share predicted >50K at each threshold."""
    rows = []
    positives = max(int(labels.sum()), 1)
    for cut in thresholds:
        predicted = probabilities >= cut
        true_positives = int((predicted & (labels == 1)).sum())
        n_predicted = int(predicted.sum())
        precision = true_positives / n_predicted if n_predicted else 1.0
        recall = true_positives / positives
        f1 = 2 * precision * recall / (precision + recall) if true_positives else 0.0
        rows.append(
            {
                "threshold": float(cut),
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "predicted >50K": n_predicted / len(labels),
            }
        )
    return pl.DataFrame(rows)


def plot_threshold(results: Results, run_dir: Path) -> SavedFigure:
    """Test metrics across thresholds, the validation-chosen one marked."""
    sweep = threshold_sweep(
        results.labels, results.probabilities, np.linspace(0.01, 0.99, 99)
    )
    figure = Figure(figsize=(10.5, 5), layout="constrained")
    axes = figure.subplots()
    for column, style, label in (
        ("precision", "-", "precision"),
        ("recall", "-", "recall (true positive rate)"),
        ("f1", "-", "F1"),
        ("predicted >50K", ":", "share predicted >50K"),
    ):
        axes.plot(sweep["threshold"], sweep[column], style, label=label)
    axes.axvline(
        results.threshold,
        color="black",
        ls="--",
        label=f"decision threshold {results.threshold:.3f} (chosen on validation)",
    )
    axes.axvline(0.5, color="grey", ls="-.", lw=1, label="threshold 0.5")
    axes.set(
        xlabel="Threshold on the predicted probability of >50K",
        ylabel="Value on the test set",
        title="What each threshold would give on the test set",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(figure, run_dir, "threshold")


def confusion_counts(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> np.ndarray:
    """[[true negatives, false positives], [false negatives, true positives]]."""
    predicted = (probabilities >= threshold).astype(np.int64)
    return skm.confusion_matrix(labels, predicted, labels=[0, 1])


def plot_confusion_matrix(results: Results, run_dir: Path) -> SavedFigure:
    counts = confusion_counts(results.labels, results.probabilities, results.threshold)
    share_of_actual = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(5.8, 4.8), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(share_of_actual, cmap="Blues", vmin=0, vmax=1)
    for row in range(2):
        for column in range(2):
            axes.text(
                column,
                row,
                f"{counts[row, column]:,}\n"
                f"{share_of_actual[row, column]:.1%} of actual",
                ha="center",
                va="center",
                color="white" if share_of_actual[row, column] > 0.6 else "black",
                fontsize=11,
            )
    ticks = [
        f"{name} ({kind})" for name, kind in zip(CLASS_NAMES, ("0", "1"), strict=True)
    ]
    axes.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=ticks,
        yticklabels=ticks,
        xlabel="Predicted income",
        ylabel="Actual income",
        title=f"Confusion matrix at threshold {results.threshold:.3f}\n"
        f"test set, n={counts.sum():,}",
    )
    figure.colorbar(image, ax=axes, label="Share of the actual class")
    return save_figure(figure, run_dir, "confusion_matrix")


# --- groups -------------------------------------------------------------------


def group_table(
    results: Results, columns: Sequence[str] = GROUP_COLUMNS
) -> pl.DataFrame:
    """Per group: records, actual and predicted >50K rates, TPR and FPR."""
    parts = []
    for column in columns:
        counts = _group_counts(results, column)
        negatives = pl.col("records") - pl.col("positives")
        parts.append(
            counts.select(
                pl.lit(column).alias("attribute"),
                "group",
                "records",
                pl.col("positives").alias("actual >50K"),
                (pl.col("positives") / pl.col("records")).alias("actual rate"),
                (pl.col("predicted") / pl.col("records")).alias("predicted rate"),
                (pl.col("true positives") / pl.col("positives")).alias("TPR"),
                (pl.col("false positives") / negatives).alias("FPR"),
            )
        )
    return pl.concat(parts).with_columns(pl.col(pl.Float64).round(DECIMALS))


def _group_counts(results: Results, column: str) -> pl.DataFrame:
    """Per value of ``column``: records, positives, predictions and hits (integers)."""
    predicted = pl.col("probability") >= results.threshold
    positive = pl.col(LABEL_COLUMN) == 1
    return (
        results.predictions.group_by(pl.col(column).alias("group"))
        .agg(
            pl.len().cast(pl.Int64).alias("records"),
            predicted.sum().cast(pl.Int64).alias("predicted"),
            positive.sum().cast(pl.Int64).alias("positives"),
            (predicted & positive).sum().cast(pl.Int64).alias("true positives"),
            (predicted & ~positive).sum().cast(pl.Int64).alias("false positives"),
        )
        .sort(["records", "group"], descending=[True, False])
    )


def plot_group_rates(
    results: Results, run_dir: Path, columns: Sequence[str] = GROUP_COLUMNS
) -> SavedFigure:
    """Predicted vs actual >50K rate, TPR and FPR per group, with 95% intervals."""
    figure = Figure(
        figsize=(
            13,
            1.6 + 0.55 * sum(results.predictions[c].n_unique() for c in columns),
        ),
        layout="constrained",
    )
    grid = figure.subplots(
        len(columns),
        3,
        squeeze=False,
        gridspec_kw={
            "height_ratios": [results.predictions[c].n_unique() + 1 for c in columns]
        },
    )
    for row, column in enumerate(columns):
        counts = _group_counts(results, column)
        names = [
            f"{g} (n={n:,})"
            for g, n in zip(counts["group"], counts["records"], strict=True)
        ]
        negatives = counts["records"] - counts["positives"]
        panels = (
            ("Share predicted >50K", counts["predicted"], counts["records"]),
            ("True positive rate", counts["true positives"], counts["positives"]),
            ("False positive rate", counts["false positives"], negatives),
        )
        for position, (title, hits, totals) in enumerate(panels):
            axes = grid[row, position]
            _group_bars(axes, names, hits.to_numpy(), totals.to_numpy())
            if position == 0:
                actual = counts["positives"] / counts["records"]
                axes.plot(actual, range(len(names)), "kD", label="actual share")
                axes.legend(loc="lower right", fontsize="small")
            axes.set(xlabel=title, title=f"{title} by {column}")
            if position:
                axes.set_yticklabels([])
    figure.suptitle(
        f"Test set results by group at threshold {results.threshold:.3f} "
        "(bars: 95% Wilson intervals)"
    )
    return save_figure(figure, run_dir, "group_rates")


def _group_bars(axes, names, hits, totals) -> None:
    rates = hits / np.maximum(totals, 1)
    low, high = wilson_interval(hits, totals)
    positions = np.arange(len(names))
    axes.barh(positions, rates, color="tab:blue", alpha=0.7)
    axes.errorbar(
        rates, positions, xerr=[rates - low, high - rates], fmt="none", ecolor="black"
    )
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)


# --- feature importance -------------------------------------------------------


@dataclass
class PermutationImportance:
    table: pl.DataFrame
    baseline_roc_auc: float
    rows: int
    repeats: int


def _sample_rows(frame: pl.DataFrame, rows: int | None, seed: int) -> pl.DataFrame:
    if rows is None or rows >= frame.height:
        return frame
    chosen = np.sort(np.random.default_rng(seed).choice(frame.height, rows, False))
    return frame[chosen]


def permutation_importance(
    artifact, test: pl.DataFrame, analysis_settings
) -> PermutationImportance:
    """ROC-AUC lost when one input column is shuffled across test records.

    Encoding is column by column, so shuffling a column's codes is the same as
    shuffling its raw values, and the rows are encoded only once.
    """
    repeats = int(analysis_settings.permutation_repeats)
    if repeats < 1:
        raise ValueError(f"analysis.permutation_repeats must be >= 1, got {repeats}")
    sample = _sample_rows(
        test, analysis_settings.permutation_rows, analysis_settings.seed
    )
    labels = sample[LABEL_COLUMN].to_numpy()
    encoded = artifact.encoder.encode_frame(sample)
    baseline = skm.roc_auc_score(labels, artifact.predict_encoded(encoded))
    rng = np.random.default_rng(analysis_settings.seed)
    rows = []
    for block, columns in (
        ("categorical", artifact.categorical_columns),
        ("numeric", artifact.numeric_columns),
    ):
        for position, column in enumerate(columns):
            drops = []
            for _ in range(repeats):
                shuffled = dict(encoded)
                shuffled[block] = encoded[block].copy()
                shuffled[block][:, position] = rng.permutation(
                    encoded[block][:, position]
                )
                score = skm.roc_auc_score(labels, artifact.predict_encoded(shuffled))
                drops.append(baseline - score)
            rows.append(
                {
                    "feature": column,
                    "kind": block,
                    "ROC-AUC drop": float(np.mean(drops)),
                    "spread (sd)": float(np.std(drops)),
                }
            )
    logger.info(
        "Permutation importance: %d columns x %d shuffles on %d test rows",
        len(rows),
        repeats,
        sample.height,
    )
    # Not rounded: the error bars are a fraction of the last shown digit.
    table = pl.DataFrame(rows).sort("ROC-AUC drop", descending=True)
    return PermutationImportance(table, float(baseline), sample.height, repeats)


def plot_permutation_importance(
    importance: PermutationImportance, run_dir: Path
) -> SavedFigure:
    table = importance.table.sort("ROC-AUC drop")
    figure = Figure(figsize=(7.5, 0.35 * table.height + 1.6), layout="constrained")
    axes = figure.subplots()
    colours = ["tab:blue" if k == "categorical" else "tab:green" for k in table["kind"]]
    axes.barh(
        table["feature"],
        table["ROC-AUC drop"],
        xerr=table["spread (sd)"] if importance.repeats > 1 else None,
        color=colours,
    )
    axes.axvline(0, color="black", lw=0.8)
    handles = [
        Patch(color=colour, label=f"{kind} column")
        for colour, kind in (("tab:blue", "categorical"), ("tab:green", "numeric"))
    ]
    axes.legend(handles=handles, loc="lower right")
    axes.set(
        xlabel=f"Drop in test ROC-AUC when the column is shuffled "
        f"(baseline {importance.baseline_roc_auc:.3f})",
        ylabel="Input column",
        title=f"Permutation importance ({importance.rows:,} test rows, "
        f"{importance.repeats} shuffles each)",
    )
    return save_figure(figure, run_dir, "permutation_importance")


@dataclass
class AttentionMap:
    """Mean first-block attention: rows attend (queries), columns are attended."""

    tokens: list[str]
    matrix: np.ndarray
    rows: int

    @property
    def received(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"column": self.tokens, "mean attention received": self.matrix.mean(axis=0)}
        ).sort("mean attention received", descending=True)


def token_names(artifact, n_tokens: int) -> list[str]:
    """Column names in token order: categorical, then numeric when they are tokens."""
    categorical, numeric = artifact.categorical_columns, artifact.numeric_columns
    if n_tokens == len(categorical) + len(numeric):
        return [*categorical, *numeric]
    if n_tokens == len(categorical):
        return list(categorical)
    raise ValueError(
        f"the first attention layer sees {n_tokens} tokens, but the artifact has "
        f"{len(categorical)} categorical and {len(numeric)} numeric columns; "
        "this model layout is not one lib.model builds"
    )


def attention_by_column(
    artifact, test: pl.DataFrame, analysis_settings
) -> AttentionMap:
    """Attention scores of the first transformer block, averaged over heads and rows."""
    import keras

    model = artifact.model
    attention = next(
        (
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.MultiHeadAttention)
        ),
        None,
    )
    if attention is None:
        raise ValueError(f"model {model.name!r} has no MultiHeadAttention layer")
    # The layer's query input is the token sequence the first block reads.
    token_model = keras.Model(model.input, attention.input[0])
    sample = _sample_rows(
        test, analysis_settings.attention_rows, analysis_settings.seed
    )
    encoded = artifact.encoder.encode_frame(sample)
    tokens = token_model.predict(encoded, batch_size=1024, verbose=0)
    totals = np.zeros((tokens.shape[1], tokens.shape[1]))
    for start in range(0, len(tokens), 1024):
        batch = tokens[start : start + 1024]
        _, scores = attention(
            batch, batch, return_attention_scores=True, training=False
        )
        totals += np.asarray(scores).sum(axis=(0, 1))
    n_heads = np.asarray(scores).shape[1]
    matrix = totals / (len(tokens) * n_heads)
    return AttentionMap(token_names(artifact, tokens.shape[1]), matrix, len(tokens))


def plot_attention(attention: AttentionMap, run_dir: Path) -> SavedFigure:
    n = len(attention.tokens)
    figure = Figure(figsize=(13, 5.8), layout="constrained")
    heatmap, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    image = heatmap.imshow(attention.matrix, cmap="viridis")
    heatmap.set_xticks(range(n), attention.tokens, rotation=60, ha="right")
    heatmap.set_yticks(range(n), attention.tokens)
    heatmap.set(
        xlabel="Column attended to (key)",
        ylabel="Column attending (query)",
        title="Mean attention weight, first block",
    )
    figure.colorbar(image, ax=heatmap, label="Attention weight (rows sum to 1)")
    received = attention.received.reverse()
    # Dots, not bars: the values sit close to uniform, and bars would hide that.
    bars.plot(received["mean attention received"], received["column"], "o")
    bars.axvline(1 / n, color="black", ls="--", label=f"uniform (1/{n})")
    bars.grid(axis="y", alpha=0.3)
    bars.xaxis.set_major_locator(MaxNLocator(nbins=5))
    bars.set(
        xlabel="Mean attention received (share of all attention)",
        ylabel="Column",
        title="Attention received per column",
    )
    bars.legend(loc="lower right")
    figure.suptitle(
        f"First transformer block, averaged over heads and {attention.rows:,} test rows"
    )
    return save_figure(figure, run_dir, "attention")


# --- the model card -----------------------------------------------------------


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a small frame."""

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.{DECIMALS}f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(frame.columns) + " |",
        "| " + " | ".join("---" for _ in frame.columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.rows()]
    return "\n".join(lines)


def write_model_card(
    results: Results,
    study,
    settings,
    importance: PermutationImportance,
) -> Note:
    """Write ``model_card.md`` into the run folder and return it for display."""
    groups = group_table(results)
    calibration = calibration_summary(results, settings.analysis.calibration_bins)
    sections = [
        _card_overview(results),
        _card_data(results),
        _card_training(results, study),
        _card_metrics(results, calibration),
        _card_threshold(results, settings),
        _card_groups(groups),
        _card_features(importance),
        _card_limits(results, study),
        _card_figures(results.run_dir),
    ]
    text = "\n\n".join(sections) + "\n"
    path = results.run_dir / MODEL_CARD_FILE
    path.write_text(text)
    logger.info("Wrote the model card %s", path)
    return Note(text)


def _card_overview(results: Results) -> str:
    manifest = results.manifest
    versions = ", ".join(
        f"{name} {version}" for name, version in manifest["library_versions"].items()
    )
    return (
        "# Model card: TabTransformer income classifier (UCI Adult)\n\n"
        f"- **Predicts**: the probability of `{manifest.get('label', 'income > 50K')}`"
        " for a person described by the 14 attributes of the 1994 US census "
        "extract; the label is >50K when the probability reaches the decision "
        "threshold.\n"
        "- **Model**: TabTransformer (Huang et al., 2020) in Keras 3 on "
        "TensorFlow: column embeddings, multi-head self-attention blocks, an MLP "
        "head.\n"
        f"- **Artifact**: `model/` (created {manifest.get('created', '?')}, format "
        f"{manifest.get('format_version')}), served under the SageMaker "
        "inference contract.\n"
        f"- **Libraries**: {versions}."
    )


def _card_data(results: Results) -> str:
    summary = results.manifest.get("summary", {})
    lines = [
        "## Data",
        "",
        "UCI Adult (Becker and Kohavi, 1996; CC BY 4.0), files as published and "
        "verified by SHA-256: `adult.data` for training and validation, "
        f"`adult.test` ({results.metrics['n_records']:,} records) only for the "
        "final evaluation. Missing values (`?`) are a category of their own. "
        "`fnlwgt`, the census sampling weight, is "
        f"{FNLWGT_USES.get(summary.get('fnlwgt'), 'used as configured')}; the "
        "metrics are also reported weighted by it.",
    ]
    ledger_path = results.run_dir / "data" / "row_ledger.json"
    if ledger_path.is_file():
        split = json.loads(ledger_path.read_text())["split"]
        lines += [
            "",
            f"Split: {split['train']:,} training and {split['validation']:,} "
            "validation records (stratified on the label) for the search; the "
            f"final model trains on all {summary.get('train_rows', 0):,} records of "
            f"`adult.data`. Share earning >50K in the test set: "
            f"{results.metrics['positive_rate']:.3f}.",
        ]
    return "\n".join(lines)


def _card_training(results: Results, study) -> str:
    summary = results.manifest.get("summary", {})
    table = study_summary(study)
    chosen = summary.get("hyperparameters", {})
    shown = ", ".join(f"`{k}`={v}" for k, v in sorted(chosen.items()))
    return (
        "## Training\n\n"
        f"Optuna study `{study.study_name}` (TPE sampler, median pruner), "
        f"objective: {_objective_label(study)}.\n\n"
        f"{markdown_table(table.drop('study', 'objective'))}\n\n"
        f"The best trial ({summary.get('best_trial')}) was retrained on training + "
        f"validation for {summary.get('epochs')} epochs (its best epoch) in "
        f"{summary.get('final_training_seconds')} s. Hyperparameters (`epochs` is "
        f"the ceiling the search proposed): {shown}."
    )


def _card_metrics(results: Results, calibration: pl.DataFrame) -> str:
    table = metrics_table(results.metrics)
    ece = calibration["expected calibration error"][0]
    return (
        "## Test metrics\n\n"
        f"On `adult.test`, {results.metrics['n_records']:,} records, scored once.\n\n"
        f"{markdown_table(table)}\n\n"
        f"Calibration: expected calibration error {ece:.3f} over "
        f"{calibration['bins'][0]} equal-width bins (`figures/calibration.png`)."
    )


def _card_threshold(results: Results, settings) -> str:
    return "## Decision threshold\n\n" + describe_threshold(results, settings).text


def _card_groups(groups: pl.DataFrame) -> str:
    return (
        "## Results by sex and race\n\n"
        "At the decision threshold, on the test set. TPR: share of the people "
        "earning >50K who are predicted so; FPR: share of the others predicted "
        ">50K. Small groups have wide uncertainty (`figures/group_rates.png` "
        "shows 95% intervals).\n\n" + markdown_table(groups)
    )


def _card_features(importance: PermutationImportance) -> str:
    top = importance.table.head(5)
    listed = ", ".join(
        f"`{f}` ({d:.3f})"
        for f, d in zip(top["feature"], top["ROC-AUC drop"], strict=True)
    )
    return (
        "## What the model relies on\n\n"
        f"Largest drops in test ROC-AUC when one column is shuffled "
        f"({importance.rows:,} rows, {importance.repeats} shuffles each): {listed}. "
        "Correlated columns (`education` and `education_num`, `relationship` and "
        "`marital_status`) share credit, so each looks less important than the "
        "information it carries."
    )


def _card_figures(run_dir: Path) -> str:
    paths = sorted((Path(run_dir) / FIGURES_DIR).glob("*.png"))
    links = [f"- [{p.stem.replace('_', ' ')}]({FIGURES_DIR}/{p.name})" for p in paths]
    return "## Figures\n\n" + "\n".join(links)


def _card_limits(results: Results, study) -> str:
    n_complete = len(_complete_trials(study))
    lines = [
        "## Intended use and limits",
        "",
        "- Intended use: a benchmark and teaching model for tabular deep learning "
        "and its tooling. It is not fit for decisions about real people (credit, "
        "hiring, benefits, pricing).",
        "- The data describe the United States in 1994; incomes are not adjusted "
        "for inflation and the population has changed since.",
        "- `sex` and `race` are model inputs, so predictions can depend on them "
        "directly (and on proxies such as `relationship`); error rates differ "
        "between groups (see above), and the smallest race groups have too few "
        "records for firm conclusions.",
        "- The threshold was chosen on a model trained without the validation "
        "records, then kept for the retrained model; its test F1 can therefore "
        "differ a little from the best attainable on new data.",
        "- Attention weights describe where the first transformer block looks, "
        "not why the model predicts what it does.",
    ]
    if n_complete < FEW_TRIALS:
        lines.append(
            f"- The search had {n_complete} complete trials: a smoke-test budget. "
            "Hyperparameter importances and the chosen configuration are not "
            "reliable; run the default budget before using these numbers."
        )
    return "\n".join(lines)
