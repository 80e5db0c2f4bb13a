"""Parallel workers on one study: storage choice, sharing, and surviving kill -9.

Workers are real processes running the tiny objectives of tests/optuna_objectives.py,
so nothing here needs TensorFlow except the one test of the real objective.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_objectives import (
    MARKER_DIR_VARIABLE,
    SLEEP_SECONDS_VARIABLE,
    temporary_mysql_database,
)

from lib.config import format_override, load_settings
from lib.parallel import (
    ParallelRunError,
    choose_parallel_overrides,
    import_objective,
    launch_workers,
    main,
    run_worker,
    worker_command,
)
from lib.storage import create_storage

REPO_ROOT = Path(__file__).resolve().parents[1]
QUADRATIC = "tests.optuna_objectives:quadratic"
MARKED_SLEEP = "tests.optuna_objectives:marked_sleep"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(autouse=True)
def run_from_repo_root(monkeypatch):
    # Workers import the objectives as tests.optuna_objectives from the working
    # folder, as `python -m` does; in this process the repo root is added by hand.
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def load_study(overrides, run_dir) -> optuna.Study:
    settings = load_settings(overrides)
    return optuna.load_study(
        study_name=settings.study.name,
        storage=create_storage(settings.study, run_dir),
    )


def test_two_workers_share_the_journal_study_of_a_local_run(tmp_path):
    run_dir = tmp_path / "run"
    report = launch_workers(
        ["study.name=shared"], 2, 4, run_dir, objective_reference=QUADRATIC
    )

    assert report.exit_codes == [0, 0]
    assert report.finished_trials == 8
    assert (run_dir / "study.journal").is_file()
    assert not (run_dir / "study.db").exists()
    assert all(log.is_file() for log in report.worker_logs)
    # Later commands on the run folder find the journal without being told.
    study = load_study(["study.name=shared"], run_dir)
    trials = study.get_trials()
    assert len(trials) == 8
    assert {trial.state for trial in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # Offset seeds: the workers did not sample the same points side by side.
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 8


def test_explicit_sqlite_is_refused_for_parallel_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    overrides = [format_override("study.storage", url)]
    with pytest.raises(ParallelRunError, match="database is locked"):
        choose_parallel_overrides(load_settings(overrides), overrides, tmp_path)
    with pytest.raises(ParallelRunError, match="database is locked"):
        run_worker(overrides, tmp_path, 0, 1, QUADRATIC)


def test_run_folder_with_a_sqlite_study_is_refused(tmp_path):
    (tmp_path / "study.db").touch()
    with pytest.raises(ParallelRunError, match="already holds a SQLite study"):
        choose_parallel_overrides(load_settings([]), [], tmp_path)


def test_default_storage_becomes_the_run_folders_journal(tmp_path):
    overrides = choose_parallel_overrides(load_settings([]), ["seed=7"], tmp_path)
    assert overrides == ["seed=7", "study.storage='journal'"]


def test_command_line_reports_a_refused_storage_with_exit_code_2(tmp_path, caplog):
    url = format_override("study.storage", f"sqlite:///{tmp_path / 's.db'}")
    arguments = ["--workers", "2", "--trials-per-worker", "1", "--run-dir"]
    exit_code = main([*arguments, str(tmp_path), "--objective", QUADRATIC, url])
    assert exit_code == 2
    assert "database is locked" in caplog.text


def test_workers_only_load_an_existing_study(tmp_path):
    overrides = ["study.storage=journal", "study.name=never-created"]
    with pytest.raises(ParallelRunError, match="does not exist.*workers only load"):
        run_worker(overrides, tmp_path, 0, 1, QUADRATIC)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.optuna_objectives", "must look like"),
        ("tests.no_such_module:quadratic", "cannot import"),
        ("tests.optuna_objectives:no_such_function", "has no function"),
    ],
)
def test_bad_objective_references_are_explained(reference, message):
    with pytest.raises(ParallelRunError, match=message):
        import_objective(reference)


def wait_for_file(folder: Path, pattern: str, process, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"worker exited early with {process.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} in {folder} within {timeout} s")


@pytest.fixture(params=["journal", pytest.param("mysql", marks=pytest.mark.mysql)])
def crash_study_storage(request):
    """Overrides naming the study storage: the local journal, or MariaDB."""
    if request.param == "journal":
        yield ["study.storage=journal"]
        return
    with temporary_mysql_database(request.getfixturevalue("mysql_url")) as url:
        yield [format_override("study.storage", url)]


@pytest.mark.slow
def test_trial_of_a_killed_worker_is_failed_and_run_again(
    crash_study_storage, tmp_path
):
    interval, grace, wanted = 1, 2, 3
    overrides = [
        *crash_study_storage,
        "study.name=crash",
        f"study.heartbeat_interval_seconds={interval}",
        f"study.heartbeat_grace_seconds={grace}",
    ]
    run_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    create = [sys.executable, "-m", "lib.parallel", "--workers", "0"]
    create += ["--trials-per-worker", "1", "--run-dir", str(run_dir)]
    subprocess.run(
        [*create, "--objective", MARKED_SLEEP, *overrides], check=True, timeout=120
    )

    slow = {
        **os.environ,
        SLEEP_SECONDS_VARIABLE: "120",
        MARKER_DIR_VARIABLE: str(markers),
    }
    victim = subprocess.Popen(
        worker_command(overrides, run_dir, 0, 1, MARKED_SLEEP), env=slow
    )
    try:
        wait_for_file(markers, f"trial-0-pid-{victim.pid}.started", victim)
        os.kill(victim.pid, signal.SIGKILL)  # mid-trial, as a reclaimed spot node
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
    study = load_study(overrides, run_dir)
    assert [trial.state for trial in study.get_trials()] == [TrialState.RUNNING]

    time.sleep(grace + interval)  # the dead worker's heartbeat is now stale
    fast = {**os.environ, SLEEP_SECONDS_VARIABLE: "0.05"}
    replacement = subprocess.run(
        worker_command(overrides, run_dir, 1, wanted, MARKED_SLEEP),
        env=fast,
        timeout=120,
    )

    assert replacement.returncode == 0
    killed, *others = load_study(overrides, run_dir).get_trials()
    assert killed.state == TrialState.FAIL
    assert [trial.state for trial in others] == [TrialState.COMPLETE] * wanted
    retried = others[0]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == 0
    assert retried.params == killed.params


@pytest.mark.slow
@pytest.mark.mysql
def test_scale_check_on_mariadb_finishes_every_trial(mysql_url, tmp_path):
    output = tmp_path / "study_scale.json"
    command = [sys.executable, "benchmarks/study_scale_check.py", "--output"]
    subprocess.run([*command, str(output)], check=True, timeout=600)

    figures = json.loads(output.read_text())
    assert figures["workers_died"] == 0
    assert figures["exit_codes"] == [0] * 8
    assert figures["complete"] + figures["pruned"] + figures["failed"] == 200
    assert figures["running"] == figures["waiting"] == 0
    assert figures["trials_per_minute"] > 0


@pytest.mark.slow
def test_two_workers_run_the_real_tabtransformer_objective(tmp_path):
    from lib.data import prepare_data

    # The small budget's 5-minute study limit is not under test here; on a loaded
    # 2-core machine two TensorFlow workers can need longer for 2 x 2 trials.
    overrides = [
        "budget=small",
        "budget.timeout_minutes=20",
        "study.name=real-parallel",
    ]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prepare_data(load_settings(overrides), run_dir)

    report = launch_workers(overrides, 2, 2, run_dir)

    assert report.exit_codes == [0, 0]
    study = load_study(overrides, run_dir)
    states = [trial.state for trial in study.get_trials()]
    finished = [s for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    # The workers share the goal of 2 x 2 finished trials; one may overshoot by one.
    assert 4 <= len(finished) <= 5
    assert TrialState.RUNNING not in states
    assert TrialState.COMPLETE in states
    best = study.best_trial
    assert -0.55 < best.value < -0.25  # a negated validation log loss
    assert set(best.user_attrs) >= {"hyperparameters", "best_epoch", "threshold"}
    # The default configuration was queued once, not once per worker.
    defaults = load_settings(overrides).tf_keras.hyperparameters
    first = study.get_trials()[0]
    assert first.params["n_blocks"] == defaults.n_blocks
    assert sum(1 for t in study.get_trials() if t.params == first.params) == 1
