"""Tiny Optuna objectives for worker processes in tests and the scale check.

Workers import them by reference (``--objective tests.optuna_objectives:quadratic``)
so storage tests run real processes without TensorFlow. All maximise. Also here:
a throwaway MySQL database, shared by the storage tests and the scale check.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

STEPS = 4
# Seconds slept per reported step: enough for trials to overlap across workers.
STEP_SECONDS = 0.02
# Environment variables read by `marked_sleep`, set by the test that starts workers.
SLEEP_SECONDS_VARIABLE = "OPTUNA_TEST_TRIAL_SECONDS"
MARKER_DIR_VARIABLE = "OPTUNA_TEST_MARKER_DIR"


def quadratic(trial: optuna.Trial) -> float:
    """A smooth bowl with a peak at x=1, y=2, reported per step so trials prune."""
    x = trial.suggest_float("x", -3.0, 3.0)
    y = trial.suggest_int("y", 0, 4)
    value = -((x - 1.0) ** 2) - (y - 2) ** 2
    for step in range(STEPS):
        # The value approaches its final level as steps go by, like a learning curve.
        trial.report(value * (STEPS - step), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
        time.sleep(STEP_SECONDS)
    return value


def flaky_quadratic(trial: optuna.Trial) -> float:
    """``quadratic`` that raises for x above 2.7 (about 5% of trials): FAIL states."""
    value = quadratic(trial)
    if trial.params["x"] > 2.7:
        raise RuntimeError(f"stand-in failure of trial {trial.number} (x > 2.7)")
    return value


def marked_sleep(trial: optuna.Trial) -> float:
    """Leave a marker file when the trial runs, then sleep: a trial to kill mid-way."""
    x = trial.suggest_float("x", 0.0, 1.0)
    marker_dir = os.environ.get(MARKER_DIR_VARIABLE)
    if marker_dir:
        marker = Path(marker_dir) / f"trial-{trial.number}-pid-{os.getpid()}.started"
        marker.write_text(str(trial.params))
    time.sleep(float(os.environ.get(SLEEP_SECONDS_VARIABLE, "0.05")))
    return x


@contextmanager
def temporary_mysql_database(
    admin_url: str, prefix: str = "optuna_test"
) -> Iterator[str]:
    """Create a database of its own on the test server; yield its URL; drop it.

    A random name keeps concurrent runs (and reruns after a crash) apart.
    """
    import sqlalchemy

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(admin_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
        url = sqlalchemy.engine.make_url(admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        engine.dispose()


@contextmanager
def temporary_mysql_user(
    admin_url: str, database: str, password: str, prefix: str = "optuna"
) -> Iterator[str]:
    """A user with all rights on ``database`` and the given password; yield its name.

    The user is dropped afterwards, whatever happened.
    """
    import sqlalchemy

    user = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "CREATE USER :user@'127.0.0.1' IDENTIFIED BY :password"
                ),
                {"user": user, "password": password},
            )
            connection.exec_driver_sql(
                f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'127.0.0.1'"
            )
        yield user
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        engine.dispose()
