"""The SageMaker training entry point, run here with the SM_* variables and the
/opt/ml folders pointed at a temporary tree (no container, no AWS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from lib import aws, sagemaker_training
from lib.aws import processing_entry
from lib.config import load_settings
from lib.data import TEST_FILE, TRAIN_FILE, read_raw_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-Ab12"


@pytest.fixture(scope="module")
def prepared_channel(tmp_path_factory) -> Path:
    """The processing job's output, made by its own entry point."""
    root = tmp_path_factory.mktemp("processing")
    raw = root / "raw"
    raw.mkdir()
    packaged = load_settings([]).data
    for name in (TRAIN_FILE, TEST_FILE):
        (raw / name).write_bytes(read_raw_file(name, packaged))
    arguments = ["--input", str(raw), "--output", str(root / "out")]
    assert processing_entry.main([*arguments, "--override", "seed=42"]) == 0
    return root / "out" / "data"


def layout_environment(opt_ml: Path, hyperparameters: dict, **extra: str) -> dict:
    return {"OPT_ML": str(opt_ml), "SM_HPS": json.dumps(hyperparameters), **extra}


def test_layout_defaults_follow_the_container_and_sm_variables_win(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"task": "tune"}))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    )
    layout = sagemaker_training.ContainerLayout.from_environment(
        {"OPT_ML": str(tmp_path), "SM_MODEL_DIR": str(tmp_path / "elsewhere")}
    )
    assert layout.data_dir == tmp_path / "input/data/prepared"
    assert layout.model_dir == tmp_path / "elsewhere"
    assert layout.checkpoint_dir == tmp_path / "checkpoints"
    assert layout.host_checkpoint_dir == tmp_path / "checkpoints" / "algo-2"
    assert layout.failure_file == tmp_path / "output" / "failure"
    assert layout.hyperparameters == {"task": "tune"}
    assert (layout.current_host, layout.hosts) == ("algo-2", ["algo-1", "algo-2"])


def test_hyperparameters_of_the_request_give_the_container_the_run_settings(tmp_path):
    run_settings = aws.apply_stack_outputs(
        load_settings(
            [
                "mode=sagemaker",
                "budget=small",
                "seed=7",
                "study.name='2024'",
                "data.fnlwgt=weight",
                "aws.images.account_id='123456789012'",
            ]
        ),
        {
            "bucket": "b",
            "role_arn": "r",
            "private_subnet_ids": ["s"],
            "security_group_id": "g",
            "secret_arn": SECRET_ARN,
            "kms_key_arn": "k",
        },
    )
    request = aws.build_training_job_request(run_settings, "adult-tune-x")
    layout = sagemaker_training.ContainerLayout.from_environment(
        layout_environment(tmp_path, request["HyperParameters"])
    )
    container = load_settings(sagemaker_training.settings_overrides(layout))

    assert container.study.name == "2024"  # stays a string
    assert container.study.secret_id == SECRET_ARN
    assert container.study.secret_region == "us-east-1"
    assert container.seed == 7
    assert container.data.fnlwgt == "weight"
    assert container.budget == run_settings.budget


def test_without_a_secret_the_study_lives_in_the_checkpoint_folder(tmp_path):
    layout = sagemaker_training.ContainerLayout.from_environment(
        layout_environment(tmp_path, {"task": "tune"})
    )
    settings = load_settings(sagemaker_training.settings_overrides(layout))
    assert settings.study.storage == (
        f"sqlite:///{tmp_path.resolve()}/checkpoints/algo-1/study.db"
    )


@pytest.mark.parametrize(
    ("hyperparameters", "extra", "reason"),
    [
        ({"task": "all"}, {}, "TrainingJobError: no prepared data in"),
        ({"task": "guess"}, {}, "hyperparameter task must be one of"),
        (
            {"task": "all"},
            {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-1"},
            "task=all needs one host, this job has 2",
        ),
    ],
)
def test_failure_reason_goes_to_the_failure_file_and_the_exit_is_non_zero(
    tmp_path, monkeypatch, hyperparameters, extra, reason
):
    for key, value in layout_environment(tmp_path, hyperparameters, **extra).items():
        monkeypatch.setenv(key, value)
    assert sagemaker_training.main(["train"]) == 1
    assert reason in (tmp_path / "output" / "failure").read_text()


def finished_trials(database: Path, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's finished trials; none while the job has not created it yet."""
    if not database.is_file():
        return []
    try:
        study = optuna.load_study(
            study_name=study_name, storage=f"sqlite:///{database}"
        )
    except (KeyError, sqlalchemy.exc.OperationalError):
        return []  # the job is still creating the study
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_killed_job_resumes_from_its_checkpoint_and_writes_the_model(
    tmp_path, prepared_channel
):
    opt_ml = tmp_path / "opt" / "ml"
    hyperparameters = {
        "task": "all",
        "study_name": "resume-test",
        "budget.n_trials": "2",
        "budget.max_epochs": "2",
        "budget.timeout_minutes": "10",
        "budget.early_stopping_patience": "1",
        "budget.pruner_warmup_epochs": "1",
        # A killed trial is found stale quickly, so the restart retries it.
        "study.heartbeat_interval_seconds": "1",
        "study.heartbeat_grace_seconds": "3",
    }
    env = dict(
        os.environ,
        **layout_environment(
            opt_ml, hyperparameters, SM_CHANNEL_PREPARED=str(prepared_channel)
        ),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
        ),
    )
    command = [sys.executable, "-m", "lib.sagemaker_training", "train"]
    database = opt_ml / "checkpoints" / "algo-1" / "study.db"

    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while not finished_trials(database, "resume-test"):
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no trial finished in 15 minutes"
            time.sleep(1)
    finally:
        first.send_signal(signal.SIGKILL)  # as abrupt as a spot interruption
        first.wait()
    before = finished_trials(database, "resume-test")
    assert len(before) == 1
    assert not (opt_ml / "model").exists()

    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=1200
    )

    assert second.returncode == 0, second.stdout[-3000:]
    assert "The study already holds 1 finished trials" in second.stdout
    after = finished_trials(database, "resume-test")
    assert len(after) == 2
    kept = [t for t in after if t.number == before[0].number]
    assert kept and kept[0].value == before[0].value
    assert (opt_ml / "model").is_dir() and any((opt_ml / "model").iterdir())
    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    assert metrics["study"]["name"] == "resume-test"
    assert not (opt_ml / "output" / "failure").exists()
