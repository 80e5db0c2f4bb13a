"""The Optuna study: search space, objective, and the final model.

Trials train on the training split and are scored (and pruned) on the validation
split after every epoch. The best configuration is then retrained once on
training + validation for the number of epochs its trial found best, and scored
once on the official test file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import polars as pl
from omegaconf import DictConfig, OmegaConf

from lib import evaluation, study_attributes, training
from lib.artifact import load_artifact, save_artifact
from lib.data import LABEL_COLUMN, read_prepared
from lib.features import FeatureEncoder

logger = logging.getLogger(__name__)

# Numeric columns whose heavy right tail is log-scaled before standardising.
LOG_SCALED_COLUMNS = ("capital_gain", "capital_loss", "fnlwgt")
FOCAL_ONLY = ("focal_alpha", "focal_gamma")


@dataclass
class SplitArrays:
    encoded: dict[str, np.ndarray]
    labels: np.ndarray
    sample_weight: np.ndarray | None


def encode_split(frame: pl.DataFrame, encoder: FeatureEncoder, fnlwgt_mode: str):
    weights = None
    if fnlwgt_mode == "weight":
        census = frame["fnlwgt"].to_numpy().astype(np.float64)
        weights = census / census.mean()
    return SplitArrays(
        encoder.encode_frame(frame), frame[LABEL_COLUMN].to_numpy(), weights
    )


def suggest_hyperparameters(trial: optuna.Trial, model_settings: DictConfig) -> dict:
    """Draw a configuration; settings outside the search space keep their defaults."""
    chosen = OmegaConf.to_container(model_settings.hyperparameters)
    space = OmegaConf.to_container(model_settings.search_space)
    uses_focal = None
    if "use_focal_loss" in space:
        uses_focal = _suggest(trial, "use_focal_loss", space.pop("use_focal_loss"))
        chosen["use_focal_loss"] = uses_focal
    for name, spec in space.items():
        if name in FOCAL_ONLY and chosen["use_focal_loss"] is False:
            continue  # Only meaningful with the focal loss: keep the space conditional.
        chosen[name] = _suggest(trial, name, spec)
    return chosen


def _suggest(trial: optuna.Trial, name: str, spec: Mapping):
    kind = spec["type"]
    if kind == "int":
        return trial.suggest_int(
            name, spec["low"], spec["high"], log=spec.get("log", False)
        )
    if kind == "float":
        return trial.suggest_float(
            name, spec["low"], spec["high"], log=spec.get("log", False)
        )
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec["choices"]))
    raise ValueError(f"search_space.{name}: unknown type {kind!r}")



def objective_label(objective: str) -> str:
    """How the study's values are named in logs, plots and the model card."""
    if objective == "log_loss":
        return "validation log loss, negated (higher is better)"
    return f"validation {objective}"


def create_study(settings: DictConfig, storage) -> optuna.Study:
    """Create the study, or load it so an interrupted search continues."""
    sampler = optuna.samplers.TPESampler(
        seed=settings.study.sampler_seed, n_startup_trials=5, multivariate=True
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=settings.budget.pruner_warmup_epochs
    )
    study = optuna.create_study(
        study_name=settings.study.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    study.set_user_attr("objective", objective_label(settings.study.objective))
    if settings.budget.enqueue_defaults and not study.trials:
        defaults = OmegaConf.to_container(settings.tf_keras.hyperparameters)
        searched = settings.tf_keras.search_space.keys()
        study.enqueue_trial({k: v for k, v in defaults.items() if k in searched})
    return study


class Objective:
    """Trains one configuration; data is encoded once per process, not per trial."""

    def __init__(self, settings: DictConfig, run_dir: Path):
        self.settings = settings
        self.run_dir = Path(run_dir)
        prepared = read_prepared(run_dir)
        self.encoder = FeatureEncoder.fit(
            prepared.train, settings.data.fnlwgt, LOG_SCALED_COLUMNS
        )
        self.train = encode_split(prepared.train, self.encoder, settings.data.fnlwgt)
        self.validation = encode_split(
            prepared.validation, self.encoder, settings.data.fnlwgt
        )

    def __call__(self, trial: optuna.Trial) -> float:
        settings = self.settings
        hyperparameters = suggest_hyperparameters(trial, settings.tf_keras)
        epochs = min(hyperparameters["epochs"], settings.budget.max_epochs)
        label = f"Trial {trial.number}"
        model = training.build_and_compile(
            self.encoder,
            hyperparameters,
            settings.seed + trial.number,
            n_rows=len(self.train.labels),
            batch_size=settings.tf_keras.batch_size,
            schedule_epochs=epochs,
            jit_compile=settings.tf_keras.jit_compile,
        )

        def report(epoch: int, score: float) -> None:
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        monitor = training.ValidationMonitor(
            self.validation.encoded,
            self.validation.labels,
            objective=settings.study.objective,
            patience=settings.budget.early_stopping_patience,
            label=label,
            report=report,
            batch_size=settings.tf_keras.predict_batch_size,
        )
        training.fit(
            model,
            self.train.encoded,
            self.train.labels,
            epochs=epochs,
            batch_size=settings.tf_keras.batch_size,
            seed=settings.seed + trial.number,
            balance_classes=hyperparameters["balance_classes"],
            sample_weight=self.train.sample_weight,
            callbacks=[monitor],
        )
        monitor.restore_best()
        probabilities = training.predict_probabilities(
            model, self.validation.encoded, settings.tf_keras.predict_batch_size
        )
        threshold = evaluation.choose_threshold(
            self.validation.labels,
            probabilities,
            settings.threshold.policy,
            settings.threshold.cost_ratio,
        )
        # Values too large for the database's attribute column go to files.
        study_attributes.set_user_attr(
            trial, "hyperparameters", hyperparameters, self.run_dir
        )
        trial.set_user_attr("best_epoch", monitor.best_epoch)
        trial.set_user_attr("planned_epochs", epochs)
        trial.set_user_attr("threshold", threshold)
        study_attributes.set_user_attr(
            trial,
            "validation_curve",
            [round(h[settings.study.objective], 5) for h in monitor.history],
            self.run_dir,
        )
        return monitor.best_score


def optimize(settings: DictConfig, study: optuna.Study, n_trials: int, run_dir: Path):
    """Run trials until the study holds ``n_trials`` finished ones or time is up.

    Finished means complete or pruned; a failing trial is recorded as failed and the
    search goes on.
    """
    objective = Objective(settings, Path(run_dir))
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    already = len(study.get_trials(deepcopy=False, states=finished_states))
    remaining = max(0, n_trials - already)
    if already:
        logger.info("The study already holds %d finished trials", already)
    if remaining == 0:
        return study
    logger.info(
        "Running up to %d trials (time limit %s min)",
        remaining,
        settings.budget.timeout_minutes,
    )
    study.optimize(
        objective,
        n_trials=remaining,
        timeout=settings.budget.timeout_minutes * 60,
        catch=(Exception,),
        callbacks=[
            optuna.study.MaxTrialsCallback(n_trials, states=finished_states),
            _log_trial,
        ],
        gc_after_trial=True,
    )
    return study


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for each in study.get_trials(deepcopy=False):
        counts[each.state.name.lower()] += 1
    best = study.best_value if counts["complete"] else float("nan")
    logger.info(
        "Trial %d %s; study: %d complete, %d pruned, %d failed; best %.4f",
        trial.number,
        trial.state.name.lower(),
        counts["complete"],
        counts["pruned"],
        counts["fail"],
        best,
    )


def best_configuration(study: optuna.Study, run_dir: Path) -> tuple[dict, int]:
    """The best trial's record (hyperparameters, epochs, threshold) and number.

    Read from the study storage, so it works wherever the trial ran.
    """
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(
            f"study {study.study_name!r} has no complete trial: nothing to retrain. "
            "Look at the failed trials' logs or raise the budget."
        )
    best = study.best_trial
    return study_attributes.resolve_user_attrs(best.user_attrs, run_dir), best.number


def train_final_model(
    settings: DictConfig,
    study: optuna.Study,
    run_dir: Path,
    checkpoint_dir: Path | None = None,
) -> dict:
    """Retrain the best configuration on train+validation, save, score the test file."""
    run_dir = Path(run_dir)
    record, trial_number = best_configuration(study, run_dir)
    hyperparameters, threshold = record["hyperparameters"], record["threshold"]
    epochs = int(record["best_epoch"])
    logger.info(
        "Retraining trial %d's configuration on train+validation for %d epochs",
        trial_number,
        epochs,
    )
    prepared = read_prepared(run_dir)
    train_full = pl.concat([prepared.train, prepared.validation])
    encoder = FeatureEncoder.fit(train_full, settings.data.fnlwgt, LOG_SCALED_COLUMNS)
    arrays = encode_split(train_full, encoder, settings.data.fnlwgt)
    model = training.build_and_compile(
        encoder,
        hyperparameters,
        settings.seed,
        n_rows=train_full.height,
        batch_size=settings.tf_keras.batch_size,
        schedule_epochs=int(record.get("planned_epochs", epochs)),
        jit_compile=settings.tf_keras.jit_compile,
    )
    started = time.perf_counter()
    training.fit(
        model,
        arrays.encoded,
        arrays.labels,
        epochs=epochs,
        batch_size=settings.tf_keras.batch_size,
        seed=settings.seed,
        balance_classes=hyperparameters["balance_classes"],
        sample_weight=arrays.sample_weight,
        callbacks=[training.EpochLogger("Final model")],
        checkpoint_dir=checkpoint_dir or run_dir / "checkpoints" / "final",
    )
    seconds = time.perf_counter() - started
    summary = {
        "study": study.study_name,
        "best_trial": trial_number,
        "epochs": epochs,
        "hyperparameters": hyperparameters,
        "train_rows": train_full.height,
        "fnlwgt": settings.data.fnlwgt,
        "threshold_policy": settings.threshold.policy,
        "final_training_seconds": round(seconds, 1),
    }
    save_artifact(
        run_dir / "model", model, encoder, threshold=threshold, summary=summary
    )
    return evaluate_on_test(settings, run_dir, study)


def evaluate_on_test(settings: DictConfig, run_dir: Path, study: optuna.Study) -> dict:
    """Score the saved artifact once on the official test file; write metrics.json."""
    artifact = load_artifact(run_dir / "model")
    test = read_prepared(run_dir).test
    probabilities = artifact.predict_frame(test)
    labels = test[LABEL_COLUMN].to_numpy()
    metrics = evaluation.test_metrics(
        labels, probabilities, artifact.threshold, test["fnlwgt"].to_numpy()
    )
    metrics["headline"] = (
        "weighted" if settings.data.fnlwgt == "weight" else "unweighted"
    )
    metrics["model"] = artifact.manifest["summary"]
    metrics["study"] = {
        "name": study.study_name,
        "best_validation_score": study.best_value,
        "objective": settings.study.objective,
        "trials": {
            state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
            for state in optuna.trial.TrialState
        },
    }
    test.select("source_line", LABEL_COLUMN, "sex", "race").with_columns(
        pl.Series("probability", probabilities)
    ).write_parquet(run_dir / "test_predictions.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    headline = metrics[metrics["headline"]]
    logger.info(
        "Test (%d records): accuracy %.4f, ROC-AUC %.4f, PR-AUC %.4f, log loss %.4f",
        metrics["n_records"],
        headline["at_0.5"]["accuracy"],
        headline["roc_auc"],
        headline["pr_auc"],
        headline["log_loss"],
    )
    return metrics


def trials_table(study: optuna.Study) -> pl.DataFrame:
    """One row per trial: state, score, epochs and the most telling settings."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        chosen = trial.user_attrs.get("hyperparameters", trial.params)
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "validation score": None
                if trial.value is None
                else round(trial.value, 4),
                "best epoch": trial.user_attrs.get("best_epoch"),
                "epochs run": len(trial.intermediate_values),
                "blocks": chosen.get("n_blocks"),
                "embedding": chosen.get("embedding_dim"),
                "learning rate": chosen.get("learning_rate"),
                "focal loss": chosen.get("use_focal_loss"),
                "numeric embedding": chosen.get("numeric_embedding"),
            }
        )
    return pl.DataFrame(rows)


def headline_table(metrics: dict) -> pl.DataFrame:
    """The test figures people ask for first."""
    block = metrics[metrics["headline"]]
    return pl.DataFrame(
        {
            "test records": [metrics["n_records"]],
            "accuracy (0.5)": [round(block["at_0.5"]["accuracy"], 4)],
            "ROC-AUC": [round(block["roc_auc"], 4)],
            "PR-AUC": [round(block["pr_auc"], 4)],
            "log loss": [round(block["log_loss"], 4)],
            "threshold": [round(metrics["threshold"], 3)],
            "F1 at threshold": [round(block["at_threshold"]["f1"], 4)],
        }
    )
