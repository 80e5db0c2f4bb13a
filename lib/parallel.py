"""Parallel tuning on one machine: N worker processes share one Optuna study.

    python -m lib.parallel --workers 2 --trials-per-worker 3 --run-dir runs/par

The launcher creates the study once, then starts N workers (``--join``) that only
load it; each runs its trials and writes its log to ``<run dir>/workers/``. A worker
started by hand with ``--join`` (in another shell, or on another machine sharing a
MySQL study) joins the same study, which is also how a killed worker is replaced.

Storage: SQLite takes one writer at a time, so parallel workers would hit
"database is locked". With ``study.storage: null`` a parallel run therefore keeps
its study in the run folder's Optuna journal file (``study.journal``), which Optuna
supports for several processes on one machine, and every later command on that
run folder (notebooks, ``lib.dashboard``) finds it there. An explicit SQLite URL
is refused; a MySQL URL or ``study.secret_id`` is used as given.

Workers train the TabTransformer objective of ``lib.tuning`` unless ``--objective
module:function`` names another objective ``f(trial) -> float``, such as the tiny
ones the tests use. How many trials:

- real objective: the workers share one goal, the study's finished (complete or
  pruned) trials at launch plus N x K; whoever is free runs the next trial, so a
  dead worker's share is taken over by the others;
- ``--objective``: each worker runs exactly K trials (failed ones included).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna

from lib.config import SettingsError, format_override, load_settings
from lib.secrets_manager import SecretError
from lib.storage import (
    JOURNAL,
    SQLITE,
    SQLITE_FILE_NAME,
    StorageError,
    open_storage,
    resolve_storage_url,
    storage_kind,
)

logger = logging.getLogger(__name__)

# How long workers get to finish their trial after Ctrl-C before they are killed.
WORKER_STOP_SECONDS = 30.0
POLL_SECONDS = 0.2
# The states that count towards the real objective's trial goal.
GOAL_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class ParallelRunError(RuntimeError):
    """A parallel run cannot start: storage unfit for workers, study missing..."""


@dataclass
class ParallelRunReport:
    """What a parallel run did: worker exit codes, trial states and elapsed time."""

    run_dir: Path
    storage: str
    exit_codes: list[int]
    trial_states: dict[str, int]
    elapsed_seconds: float
    trials_at_start: int = 0
    worker_logs: list[Path] = field(default_factory=list)

    @property
    def failed_workers(self) -> list[int]:
        return [index for index, code in enumerate(self.exit_codes) if code != 0]

    @property
    def finished_trials(self) -> int:
        """Trials of the study that ended: complete, pruned or failed."""
        return sum(
            self.trial_states.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")
        )

    @property
    def trials_per_minute(self) -> float:
        """Trials ended during this run per minute of wall-clock time."""
        minutes = self.elapsed_seconds / 60
        ended = self.finished_trials - self.trials_at_start
        return ended / minutes if minutes > 0 else 0.0


def choose_parallel_overrides(
    settings, overrides: Sequence[str], run_dir: Path
) -> list[str]:
    """Return the overrides that give N processes a storage they can share.

    ``study.storage: null`` becomes the run folder's journal file; SQLite is refused.
    """
    study = settings.study
    if not study.secret_id and study.storage is None:
        if (run_dir / SQLITE_FILE_NAME).exists():
            raise ParallelRunError(
                f"{run_dir} already holds a SQLite study ({SQLITE_FILE_NAME}), which "
                "parallel workers cannot share ('database is locked'). Give every "
                "command of a parallel run study.storage=journal from the start, e.g. "
                "python -m lib.pipeline --run-dir runs/par study.storage=journal "
                "--notebooks 00 01; or use a MySQL study.storage / study.secret_id"
            )
        return [*overrides, format_override("study.storage", JOURNAL)]
    if storage_kind(resolve_storage_url(study, run_dir)) == SQLITE:
        raise ParallelRunError(
            "parallel workers cannot share a SQLite study: SQLite lets one process "
            "write at a time and workers would fail with 'database is locked'. Use "
            "study.storage=journal (a journal file in the run folder, the default "
            "for parallel runs) or a MySQL URL / study.secret_id"
        )
    return list(overrides)


def launch_workers(
    overrides: Sequence[str],
    n_workers: int,
    trials_per_worker: int,
    run_dir: str | Path | None = None,
    objective_reference: str | None = None,
) -> ParallelRunReport:
    """Create the study once, run ``n_workers`` worker processes, wait for them."""
    if n_workers < 0 or trials_per_worker < 1:
        raise ParallelRunError(
            f"need --workers >= 0 and --trials-per-worker >= 1, got {n_workers} and "
            f"{trials_per_worker}"
        )
    settings = load_settings(overrides)
    folder = _choose_run_dir(settings, run_dir)
    worker_overrides = choose_parallel_overrides(settings, overrides, folder)
    settings = load_settings(worker_overrides)
    url = resolve_storage_url(settings.study, folder)
    study = _create_study(
        settings, open_storage(url, settings.study), objective_reference
    )
    study_trials = count_goal_trials(study) + n_workers * trials_per_worker
    trials_at_start = _count_ended_trials(study)
    logger.info(
        "study %s in %s has %d trials; starting %d workers x %d trials",
        study.study_name,
        url,
        len(study.trials),
        n_workers,
        trials_per_worker,
    )
    started = time.monotonic()
    workers = [
        _start_worker(
            index,
            worker_command(
                worker_overrides,
                folder,
                index,
                trials_per_worker,
                objective_reference,
                study_trials=None if objective_reference else study_trials,
            ),
            folder,
        )
        for index in range(n_workers)
    ]
    exit_codes = _wait_for_workers(workers)
    elapsed = time.monotonic() - started
    states = Counter(trial.state.name for trial in study.get_trials(deepcopy=False))
    report = ParallelRunReport(
        run_dir=folder,
        storage=str(url),
        exit_codes=exit_codes,
        trial_states=dict(states),
        elapsed_seconds=elapsed,
        trials_at_start=trials_at_start,
        worker_logs=[log for _, log in workers],
    )
    _log_report(report)
    return report


def _choose_run_dir(settings, run_dir: str | Path | None) -> Path:
    chosen = run_dir or settings.run_dir
    if not chosen:
        chosen = Path("runs") / datetime.now().strftime("parallel-%Y%m%d-%H%M%S")
    folder = Path(chosen).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _create_study(settings, storage, objective_reference: str | None) -> optuna.Study:
    if objective_reference is None:
        return _tuning_module().create_study(settings, storage)
    return optuna.create_study(
        study_name=settings.study.name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
    )


def count_goal_trials(study: optuna.Study) -> int:
    """Complete and pruned trials: what the real objective's trial goal counts."""
    return len(study.get_trials(deepcopy=False, states=GOAL_STATES))


def _count_ended_trials(study: optuna.Study) -> int:
    return sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))


def _start_worker(
    index: int, command: list[str], run_dir: Path
) -> tuple[subprocess.Popen, Path]:
    log_path = run_dir / "workers" / f"worker-{index}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    logger.info("worker %d: pid %d, log %s", index, process.pid, log_path)
    return process, log_path


def worker_command(
    overrides: Sequence[str],
    run_dir: Path,
    worker_index: int,
    trials: int,
    objective_reference: str | None = None,
    study_trials: int | None = None,
) -> list[str]:
    """The command line of one worker that joins the study and runs ``trials``."""
    command = [
        sys.executable,
        "-m",
        "lib.parallel",
        "--join",
        "--worker-index",
        str(worker_index),
        "--trials-per-worker",
        str(trials),
        "--run-dir",
        str(run_dir),
    ]
    if objective_reference:
        command += ["--objective", objective_reference]
    if study_trials is not None:
        command += ["--study-trials", str(study_trials)]
    return [*command, *overrides]


def _wait_for_workers(workers: list[tuple[subprocess.Popen, Path]]) -> list[int]:
    processes = [process for process, _ in workers]
    try:
        while any(process.poll() is None for process in processes):
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        logger.warning("interrupted: asking workers to stop after failing their trial")
        _stop_workers(processes)
        raise
    return [process.returncode for process in processes]


def _stop_workers(processes: list[subprocess.Popen]) -> None:
    # SIGINT lets Optuna mark the running trial FAIL instead of leaving it to the
    # heartbeat grace period.
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_report(report: ParallelRunReport) -> None:
    logger.info(
        "parallel run done in %.1f s: trial states %s (%.1f trials ended/minute)",
        report.elapsed_seconds,
        report.trial_states,
        report.trials_per_minute,
    )
    for index in report.failed_workers:
        logger.error(
            "worker %d exited with code %d; see %s",
            index,
            report.exit_codes[index],
            report.worker_logs[index],
        )


def run_worker(
    overrides: Sequence[str],
    run_dir: str | Path,
    worker_index: int,
    n_trials: int,
    objective_reference: str | None = None,
    study_trials: int | None = None,
) -> optuna.Study:
    """Join the existing study and run trials in this process.

    With ``objective_reference`` this process runs ``n_trials`` trials. Without it
    the real objective runs until the study holds ``study_trials`` finished trials
    (default: those finished now plus ``n_trials``).
    """
    settings = load_settings(overrides)
    folder = Path(run_dir).resolve()
    url = resolve_storage_url(settings.study, folder)
    if storage_kind(url) == SQLITE:
        raise ParallelRunError(
            "a joining worker cannot share a SQLite study ('database is locked'): "
            "use study.storage=journal or a MySQL URL, as the launcher does"
        )
    # Workers with one seed would sample the same parameters side by side.
    settings.study.sampler_seed = int(settings.study.sampler_seed) + worker_index
    storage = open_storage(url, settings.study)
    _require_study(storage, settings.study.name, folder)
    if objective_reference is None:
        tuning = _tuning_module()
        study = tuning.create_study(settings, storage)
        if study_trials is None:
            study_trials = count_goal_trials(study) + n_trials
        tuning.optimize(settings, study, study_trials, folder)
        return study
    objective = import_objective(objective_reference)
    study = optuna.load_study(
        study_name=settings.study.name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=settings.study.sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    # One failing trial is recorded as FAIL; it must not end the worker.
    study.optimize(objective, n_trials=n_trials, catch=(Exception,))
    return study


def _require_study(storage, study_name: str, run_dir: Path) -> None:
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        raise ParallelRunError(
            f"study {study_name!r} does not exist in this storage: workers only load "
            "it. Create it first: python -m lib.parallel --workers 0 --run-dir "
            f"{run_dir} (with the same overrides)"
        ) from None


def import_objective(reference: str) -> Callable[[optuna.Trial], float]:
    """Import ``module:function`` (e.g. ``tests.optuna_objectives:quadratic``)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ParallelRunError(
            f"--objective {reference!r} must look like module.path:function_name"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ParallelRunError(
            f"cannot import {module_name!r} for --objective {reference!r} (working "
            f"folder {os.getcwd()}): {error}"
        ) from error
    objective = getattr(module, attribute, None)
    if not callable(objective):
        raise ParallelRunError(
            f"{module_name} has no function {attribute!r} for --objective {reference!r}"
        )
    return objective


def _tuning_module():
    try:
        return importlib.import_module("lib.tuning")
    except ImportError as error:
        raise ParallelRunError(
            f"the real objective needs lib.tuning, which failed to import ({error}); "
            "pass --objective module:function to run another objective"
        ) from error


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lib.parallel",
        description="Run N worker processes on one Optuna study (see module doc).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes to start (0: only create the study)",
    )
    parser.add_argument(
        "--trials-per-worker",
        type=int,
        required=True,
        help="K: trials per worker (real objective: the workers share N x K)",
    )
    parser.add_argument("--run-dir", help="run folder (default: settings, or new)")
    parser.add_argument(
        "--objective",
        help="module:function of an objective f(trial) -> float "
        "(default: the TabTransformer objective of lib.tuning)",
    )
    parser.add_argument(
        "--join",
        action="store_true",
        help="be one worker: load the existing study and run --trials-per-worker",
    )
    parser.add_argument(
        "--study-trials",
        type=int,
        help="with --join and the real objective: stop when the study holds this "
        "many complete or pruned trials (the launcher sets it)",
    )
    parser.add_argument(
        "--worker-index",
        type=int,
        default=0,
        help="with --join: offsets the sampler seed so workers differ",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides such as budget=small"
    )
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    prefix = f"worker-{arguments.worker_index} " if arguments.join else ""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
    )
    try:
        if arguments.join:
            if not arguments.run_dir:
                raise ParallelRunError("--join needs --run-dir (the launcher's folder)")
            run_worker(
                arguments.overrides,
                arguments.run_dir,
                arguments.worker_index,
                arguments.trials_per_worker,
                arguments.objective,
                arguments.study_trials,
            )
            return 0
        report = launch_workers(
            arguments.overrides,
            arguments.workers,
            arguments.trials_per_worker,
            arguments.run_dir,
            arguments.objective,
        )
    except (ParallelRunError, StorageError, SecretError, SettingsError) as error:
        logger.error("%s", error)
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted; running trials were marked failed")
        return 130
    return 1 if report.failed_workers else 0


if __name__ == "__main__":
    sys.exit(main())
