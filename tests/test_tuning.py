"""The Optuna study: a two-trial smoke run, failures, continuation, the final model."""

import json

import optuna
import pytest

from lib import storage, tuning
from lib.config import load_settings

FAST = [
    "budget=small",
    "tf_keras.hyperparameters.n_blocks=1",
    "tf_keras.hyperparameters.embedding_dim=16",
    "tf_keras.hyperparameters.mlp_layers=1",
    "tf_keras.search_space.n_blocks.high=1",
    "tf_keras.search_space.embedding_dim.choices=[16]",
    "tf_keras.search_space.mlp_layers.high=1",
]


@pytest.fixture()
def run_dir(prepared_run_dir, tmp_path):
    (tmp_path / "data").symlink_to(prepared_run_dir / "data")
    return tmp_path


@pytest.mark.slow
def test_two_trial_study_then_final_model(run_dir):
    settings = load_settings([*FAST, "study.name=smoke"])
    study = tuning.create_study(
        settings, storage.create_storage(settings.study, run_dir)
    )
    tuning.optimize(settings, study, 2, run_dir)

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    first = study.trials[0]
    assert first.params["learning_rate"] == 0.001  # the enqueued defaults
    # The negated validation log loss: better than always answering the base rate
    # (0.55 for 24% positives), and no better than a real model can be.
    assert -0.55 < first.value < -0.25
    assert study.user_attrs["objective"].startswith("validation log loss")
    assert 1 <= first.user_attrs["best_epoch"] <= 2
    assert sorted(first.intermediate_values) == [1, 2]  # reported every epoch

    metrics = tuning.train_final_model(settings, study, run_dir)
    assert metrics["n_records"] == 16_281
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    for block in ("unweighted", "weighted"):
        assert {"roc_auc", "pr_auc", "log_loss", "brier"} <= on_disk[block].keys()
        assert {"accuracy", "f1"} <= on_disk[block]["at_0.5"].keys()
    assert on_disk["unweighted"]["roc_auc"] > 0.85
    assert on_disk["study"]["trials"]["complete"] == 2


def test_a_failing_trial_is_recorded_and_the_study_goes_on(run_dir):
    settings = load_settings(
        [*FAST, "study.name=failing", "budget.enqueue_defaults=false"]
    )
    study = tuning.create_study(
        settings, storage.create_storage(settings.study, run_dir)
    )
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if trial.number == 0:
            raise ValueError("broken configuration")
        return 0.5

    study.optimize(objective, n_trials=2, catch=(Exception,))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


def test_an_interrupted_study_continues_instead_of_starting_over(run_dir):
    settings = load_settings([*FAST, "study.name=resumed"])
    url = storage.create_storage(settings.study, run_dir)
    first = tuning.create_study(settings, url)
    first.optimize(
        lambda trial: trial.suggest_float("learning_rate", 1e-4, 1e-2), n_trials=1
    )
    again = tuning.create_study(
        settings, storage.create_storage(settings.study, run_dir)
    )
    assert len(again.trials) == 1
    # Defaults are enqueued only into a new study, never again on reload.
    assert not [t for t in again.trials if t.state == optuna.trial.TrialState.WAITING]


def test_search_space_uses_log_scale_and_conditional_focal_settings():
    settings = load_settings([])
    space = settings.tf_keras.search_space
    assert space.learning_rate.log and space.weight_decay.log
    assert len(settings.tf_keras.hyperparameters) >= 17
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        trial = study.ask()
        chosen = tuning.suggest_hyperparameters(trial, settings.tf_keras)
        assert ("focal_alpha" in trial.params) == chosen["use_focal_loss"]
        study.tell(trial, 0.0)


def test_no_complete_trial_means_no_final_model(run_dir):
    settings = load_settings([*FAST, "study.name=empty"])
    study = tuning.create_study(
        settings, storage.create_storage(settings.study, run_dir)
    )
    with pytest.raises(RuntimeError, match="has no complete trial"):
        tuning.train_final_model(settings, study, run_dir)
