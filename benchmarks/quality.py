"""Test quality of the TabTransformer beside LightGBM and logistic regression.

    .venv/bin/python benchmarks/quality.py --run-dir runs/<run>   # the study's best
    .venv/bin/python benchmarks/quality.py                        # the YAML defaults

All three models see the official split and the same preprocessing
(lib.features.FeatureEncoder: categorical values as integer codes, numeric columns
log-scaled where the project does so and standardised): they train on all of
adult.data (train + validation) and are scored once on all 16,281 records of
adult.test, with accuracy at a 0.5 threshold, ROC-AUC and log loss.

- TabTransformer: the best trial of the study in <run-dir>/study.db (or
  study.journal): its hyperparameters, trained for its best epoch count with the
  learning-rate schedule it planned, as the main job's final retrain does; without
  --run-dir, the YAML defaults for --epochs epochs. Trained once per seed (three by
  default); the mean, standard deviation and range are reported.
- LightGBM: early stopping on the validation split, then refit on all training rows
  for the iteration count found. Categorical columns go in as the encoder's integer
  codes (``categorical_feature``).
- Logistic regression (sklearn): one-hot categorical codes and the standardised
  numeric columns; C is chosen on the validation split by log loss, then refit.

Figures go to benchmarks/results/quality.json and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from recorded_paths import describe_command, describe_path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "quality.json"
TEST_RECORDS = 16_281
TARGET = {"accuracy": 0.865, "roc_auc": 0.920}
STRETCH_TARGET = {"accuracy": 0.870, "roc_auc": 0.927}
HEADLINE_METRICS = ("accuracy", "roc_auc", "log_loss")
LOGISTIC_C_GRID = (0.01, 0.1, 1.0, 10.0)
LIGHTGBM_PARAMETERS = {
    "objective": "binary",
    "metric": "binary_logloss",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
LIGHTGBM_MAX_ROUNDS = 5000
LIGHTGBM_PATIENCE = 100

logger = logging.getLogger("quality")


class QualityBenchmarkError(ValueError):
    """The run folder or its study cannot provide a configuration to train."""


# ------------------------------------------------------------- inputs


def load_run_settings(run_dir: Path | None):
    """Project defaults, with the run's data, seed and batch settings when it has them.

    The study trained on the run's split and batch size; using them keeps the
    retrain faithful even if the YAML defaults changed since.
    """
    from omegaconf import OmegaConf

    from lib.config import load_settings

    settings = load_settings([])
    saved_path = run_dir / "settings.yaml" if run_dir else None
    if saved_path and saved_path.is_file():
        saved = OmegaConf.load(saved_path)
        keep = [key for key in ("data", "seed", "tf_keras") if key in saved]
        settings = OmegaConf.merge(settings, OmegaConf.masked_copy(saved, keep))
    return settings


def open_study(run_dir: Path, study_name: str | None, default_name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    database, journal = run_dir / "study.db", run_dir / "study.journal"
    if database.is_file():
        storage = f"sqlite:///{database.resolve()}"
    elif journal.is_file():
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    else:
        raise QualityBenchmarkError(
            f"{run_dir}: neither study.db nor study.journal found; pass the folder "
            "of a finished main-job run (make run) or leave out --run-dir"
        )
    names = optuna.get_all_study_names(storage)
    if study_name is None and default_name not in names and len(names) == 1:
        study_name = names[0]
    study_name = study_name or default_name
    if study_name not in names:
        raise QualityBenchmarkError(
            f"{run_dir}: no study named {study_name!r} (found {names}); "
            "pass one of those as --study-name"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def configuration_from_study(run_dir: Path, study_name: str | None, settings) -> dict:
    """Hyperparameters and epochs of the study's best complete trial."""
    import optuna

    study = open_study(run_dir, study_name, settings.study.name)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise QualityBenchmarkError(
            f"study {study.study_name!r} in {run_dir} has no complete trial"
        )
    best = study.best_trial
    missing = {"hyperparameters", "best_epoch"} - best.user_attrs.keys()
    if missing:
        raise QualityBenchmarkError(
            f"trial {best.number} of {study.study_name!r} lacks the user attributes "
            f"{sorted(missing)}; it was not written by lib.tuning"
        )
    epochs = int(best.user_attrs["best_epoch"])
    return {
        "source": f"best trial of study {study.study_name!r}",
        "trial": best.number,
        "validation_score": best.value,
        "hyperparameters": best.user_attrs["hyperparameters"],
        "epochs": epochs,
        # Older runs did not record it; their schedule then spanned the epochs run.
        "schedule_epochs": int(best.user_attrs.get("planned_epochs") or epochs),
    }


def configuration_from_defaults(settings, epochs: int | None) -> dict:
    from omegaconf import OmegaConf

    hyperparameters = OmegaConf.to_container(settings.tf_keras.hyperparameters)
    epochs = epochs or int(hyperparameters["epochs"])
    return {
        "source": "YAML defaults (tf_keras.hyperparameters)",
        "trial": None,
        "validation_score": None,
        "hyperparameters": hyperparameters,
        "epochs": epochs,
        "schedule_epochs": epochs,
    }


def load_split(run_dir: Path | None, settings, scratch: Path):
    """The run's own prepared split when there is one, else a fresh one."""
    from lib.data import prepare_data, read_prepared

    if run_dir and (run_dir / "data" / "row_ledger.json").is_file():
        return read_prepared(run_dir)
    return prepare_data(settings, scratch)


# ------------------------------------------------------------- models


def tabular_matrix(encoded: dict[str, np.ndarray]) -> np.ndarray:
    """Categorical codes first, then the numeric columns, as one float matrix."""
    return np.hstack([encoded["categorical"].astype(np.float64), encoded["numeric"]])


def score(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    from lib.evaluation import classification_metrics

    if len(labels) != TEST_RECORDS:
        raise QualityBenchmarkError(
            f"expected all {TEST_RECORDS} test records, got {len(labels)}"
        )
    metrics = classification_metrics(labels, probabilities, threshold=0.5)
    return {
        "accuracy": metrics["at_0.5"]["accuracy"],
        "roc_auc": metrics["roc_auc"],
        "log_loss": metrics["log_loss"],
        "pr_auc": metrics["pr_auc"],
    }


def train_tabtransformer(configuration, full, test, seed: int, settings) -> dict:
    import keras

    from lib import training

    hyperparameters = configuration["hyperparameters"]
    batch_size = int(settings.tf_keras.batch_size)
    keras.backend.clear_session()
    started = time.perf_counter()
    model = training.build_and_compile(
        full["encoder"],
        hyperparameters,
        seed,
        n_rows=len(full["arrays"].labels),
        batch_size=batch_size,
        schedule_epochs=configuration["schedule_epochs"],
    )
    training.fit(
        model,
        full["arrays"].encoded,
        full["arrays"].labels,
        epochs=configuration["epochs"],
        batch_size=batch_size,
        seed=seed,
        balance_classes=hyperparameters["balance_classes"],
        sample_weight=full["arrays"].sample_weight,
        callbacks=[training.EpochLogger(f"TabTransformer seed {seed}")],
    )
    seconds = time.perf_counter() - started
    probabilities = training.predict_probabilities(
        model, test["arrays"].encoded, int(settings.tf_keras.predict_batch_size)
    )
    return {
        "seed": seed,
        "train_seconds": round(seconds, 1),
        **score(test["arrays"].labels, probabilities),
    }


def train_lightgbm(split, full, test) -> dict:
    import lightgbm

    categorical = list(range(len(full["encoder"].categorical_columns)))
    parameters = {**LIGHTGBM_PARAMETERS, "num_threads": os.cpu_count() or 1}
    started = time.perf_counter()

    def dataset(part, reference=None):
        return lightgbm.Dataset(
            tabular_matrix(part.encoded),
            part.labels,
            weight=part.sample_weight,
            categorical_feature=categorical,
            reference=reference,
        )

    train_set = dataset(split["train"])
    searched = lightgbm.train(
        parameters,
        train_set,
        num_boost_round=LIGHTGBM_MAX_ROUNDS,
        valid_sets=[dataset(split["validation"], reference=train_set)],
        callbacks=[lightgbm.early_stopping(LIGHTGBM_PATIENCE, verbose=False)],
    )
    rounds = searched.best_iteration
    final = lightgbm.train(parameters, dataset(full["arrays"]), num_boost_round=rounds)
    probabilities = final.predict(tabular_matrix(test["arrays"].encoded))
    return {
        "boosting_rounds": rounds,
        "validation_log_loss": round(
            float(searched.best_score["valid_0"]["binary_logloss"]), 5
        ),
        "parameters": LIGHTGBM_PARAMETERS,
        "train_seconds": round(time.perf_counter() - started, 1),
        **score(test["arrays"].labels, probabilities),
    }


def logistic_pipeline(n_categorical: int, n_columns: int, c_value: float):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            (
                "one_hot",
                OneHotEncoder(handle_unknown="ignore"),
                list(range(n_categorical)),
            ),
            ("standardise", StandardScaler(), list(range(n_categorical, n_columns))),
        ]
    )
    return make_pipeline(columns, LogisticRegression(C=c_value, max_iter=5000))


def train_logistic(split, full, test) -> dict:
    from sklearn.metrics import log_loss

    n_categorical = len(full["encoder"].categorical_columns)
    train_matrix = tabular_matrix(split["train"].encoded)
    validation_matrix = tabular_matrix(split["validation"].encoded)
    n_columns = train_matrix.shape[1]
    started = time.perf_counter()
    validation_losses = {}
    for c_value in LOGISTIC_C_GRID:
        model = logistic_pipeline(n_categorical, n_columns, c_value)
        model.fit(
            train_matrix,
            split["train"].labels,
            logisticregression__sample_weight=split["train"].sample_weight,
        )
        probabilities = model.predict_proba(validation_matrix)[:, 1]
        validation_losses[c_value] = log_loss(split["validation"].labels, probabilities)
    chosen = min(validation_losses, key=validation_losses.get)
    final = logistic_pipeline(n_categorical, n_columns, chosen)
    final.fit(
        tabular_matrix(full["arrays"].encoded),
        full["arrays"].labels,
        logisticregression__sample_weight=full["arrays"].sample_weight,
    )
    probabilities = final.predict_proba(tabular_matrix(test["arrays"].encoded))[:, 1]
    return {
        "c": chosen,
        "validation_log_loss_by_c": {
            str(c): round(loss, 5) for c, loss in validation_losses.items()
        },
        "train_seconds": round(time.perf_counter() - started, 1),
        **score(test["arrays"].labels, probabilities),
    }


# ------------------------------------------------------------- the run


def summarise_seeds(per_seed: list[dict]) -> dict:
    summary = {}
    for metric in (*HEADLINE_METRICS, "pr_auc"):
        values = [run[metric] for run in per_seed]
        summary[metric] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return summary


def encode_parts(prepared, fnlwgt_mode: str):
    """Encoders and arrays: one fitted on train (for early stopping and C), one on
    train + validation (for the final models), as the main job's retrain does."""
    import polars as pl

    from lib.features import FeatureEncoder
    from lib.tuning import LOG_SCALED_COLUMNS, encode_split

    train_encoder = FeatureEncoder.fit(prepared.train, fnlwgt_mode, LOG_SCALED_COLUMNS)
    split = {
        "train": encode_split(prepared.train, train_encoder, fnlwgt_mode),
        "validation": encode_split(prepared.validation, train_encoder, fnlwgt_mode),
    }
    train_full = pl.concat([prepared.train, prepared.validation])
    full_encoder = FeatureEncoder.fit(train_full, fnlwgt_mode, LOG_SCALED_COLUMNS)
    full = {
        "encoder": full_encoder,
        "arrays": encode_split(train_full, full_encoder, fnlwgt_mode),
    }
    test = {"arrays": encode_split(prepared.test, full_encoder, fnlwgt_mode)}
    return split, full, test


def run_metrics_of(run_dir: Path | None) -> dict | None:
    """The main job's own test figures, when the run has them, for comparison."""
    path = run_dir / "metrics.json" if run_dir else None
    if not path or not path.is_file():
        return None
    unweighted = json.loads(path.read_text()).get("unweighted", {})
    return {
        "accuracy": unweighted.get("at_0.5", {}).get("accuracy"),
        "roc_auc": unweighted.get("roc_auc"),
        "log_loss": unweighted.get("log_loss"),
    }


def run_benchmark(arguments) -> dict:
    import keras
    import lightgbm
    import sklearn
    import tensorflow as tf

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    run_dir = arguments.run_dir
    settings = load_run_settings(run_dir)
    if run_dir:
        configuration = configuration_from_study(
            run_dir, arguments.study_name, settings
        )
    else:
        configuration = configuration_from_defaults(settings, arguments.epochs)
    seeds = arguments.seeds or [int(settings.seed) + i for i in range(3)]
    logger.info(
        "TabTransformer: %s, %d epochs (schedule over %d), seeds %s",
        configuration["source"],
        configuration["epochs"],
        configuration["schedule_epochs"],
        seeds,
    )
    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        prepared = load_split(run_dir, settings, Path(scratch))
    split, full, test = encode_parts(prepared, settings.data.fnlwgt)

    logistic = train_logistic(split, full, test)
    logger.info("Logistic regression: %s", logistic)
    boosted = train_lightgbm(split, full, test)
    logger.info("LightGBM: %s", boosted)
    per_seed = []
    for seed in seeds:
        per_seed.append(train_tabtransformer(configuration, full, test, seed, settings))
        logger.info("TabTransformer: %s", per_seed[-1])
    summary = summarise_seeds(per_seed)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": describe_command("benchmarks/quality.py", sys.argv[1:]),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "lightgbm": lightgbm.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "data": {
            "train_rows": len(full["arrays"].labels),
            "validation_rows_for_early_stopping": len(split["validation"].labels),
            "test_rows": len(test["arrays"].labels),
            "fnlwgt": settings.data.fnlwgt,
            "run_dir": describe_path(run_dir),
        },
        "tabtransformer": {
            "configuration": configuration,
            "batch_size": int(settings.tf_keras.batch_size),
            "seeds": per_seed,
            "summary": summary,
            "target": TARGET,
            "target_met": all(summary[k]["mean"] >= v for k, v in TARGET.items()),
            "stretch_target": STRETCH_TARGET,
            "stretch_target_met": all(
                summary[k]["mean"] >= v for k, v in STRETCH_TARGET.items()
            ),
        },
        "lightgbm": boosted,
        "logistic_regression": logistic,
        "main_job_metrics": run_metrics_of(run_dir),
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }


def markdown_table(results: dict) -> str:
    summary = results["tabtransformer"]["summary"]
    n_seeds = len(results["tabtransformer"]["seeds"])

    def spread(metric: str) -> str:
        figures = summary[metric]
        return (
            f"{figures['mean']:.4f} ± {figures['std']:.4f} "
            f"({figures['min']:.4f}-{figures['max']:.4f})"
        )

    lines = [
        "| model | accuracy (0.5) | ROC-AUC | log loss |",
        "| --- | --- | --- | --- |",
        f"| TabTransformer, mean ± sd (range) of {n_seeds} seeds "
        f"| {spread('accuracy')} | {spread('roc_auc')} | {spread('log_loss')} |",
    ]
    for name, key in (
        ("LightGBM", "lightgbm"),
        ("logistic regression", "logistic_regression"),
    ):
        figures = results[key]
        lines.append(
            f"| {name} | {figures['accuracy']:.4f} | {figures['roc_auc']:.4f} "
            f"| {figures['log_loss']:.4f} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="a finished main-job run folder; its study's best trial is trained",
    )
    parser.add_argument(
        "--study-name",
        default=None,
        help="study in that folder (default: study.name, or the only study there)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="TabTransformer seeds (default: seed, seed+1, seed+2 from the settings)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs without --run-dir (default: tf_keras.hyperparameters.epochs)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args(argv)
    if arguments.run_dir and not arguments.run_dir.is_dir():
        parser.error(f"--run-dir {arguments.run_dir}: no such folder")
    if arguments.run_dir and arguments.epochs:
        parser.error("--epochs applies only without --run-dir (the trial sets them)")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        results = run_benchmark(arguments)
    except QualityBenchmarkError as error:
        logger.error("%s", error)
        return 2
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nFigures written to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
