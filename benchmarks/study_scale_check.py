"""Scale check of the shared study: 8 worker processes x 25 fast trials on MariaDB.

    .venv/bin/python benchmarks/study_scale_check.py

Runs ``lib.parallel`` with a tiny objective (no TensorFlow; about 5% of its trials
raise, some are pruned) against a throwaway database on the MariaDB server at
127.0.0.1:3306, and writes trials per minute, trial states and worker exit codes to
benchmarks/results/study_scale.json. Exits non-zero when a worker died or a trial
went missing: complete + pruned + failed must equal workers x trials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The workers import the objective as tests.optuna_objectives from the repo root.
sys.path.insert(0, str(REPO_ROOT))

import sqlalchemy  # noqa: E402

from lib.config import format_override  # noqa: E402
from lib.parallel import launch_workers  # noqa: E402
from tests.optuna_objectives import temporary_mysql_database  # noqa: E402

OBJECTIVE = "tests.optuna_objectives:flaky_quadratic"
DEFAULT_ADMIN_URL = os.environ.get(
    "TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "study_scale.json"


def server_version(admin_url: str) -> str:
    engine = sqlalchemy.create_engine(admin_url)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT VERSION()").scalar_one()
    finally:
        engine.dispose()


def run_scale_check(admin_url: str, workers: int, trials_per_worker: int) -> dict:
    """Run the workers on a database of their own and return the figures."""
    with (
        temporary_mysql_database(admin_url, prefix="optuna_scale") as url,
        tempfile.TemporaryDirectory(prefix="study-scale-") as run_dir,
    ):
        overrides = [format_override("study.storage", url), "study.name=scale-check"]
        report = launch_workers(
            overrides,
            workers,
            trials_per_worker,
            run_dir,
            objective_reference=OBJECTIVE,
        )
    states = report.trial_states
    return {
        "workers": workers,
        "trials_per_worker": trials_per_worker,
        "objective": OBJECTIVE,
        "server": f"MariaDB/MySQL {server_version(admin_url)} on 127.0.0.1",
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "elapsed_seconds": round(report.elapsed_seconds, 1),
        "trials_per_minute": round(report.trials_per_minute, 1),
        "complete": states.get("COMPLETE", 0),
        "pruned": states.get("PRUNED", 0),
        "failed": states.get("FAIL", 0),
        "running": states.get("RUNNING", 0),
        "waiting": states.get("WAITING", 0),
        "exit_codes": report.exit_codes,
        "workers_died": len(report.failed_workers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials-per-worker", type=int, default=25)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.chdir(REPO_ROOT)

    figures = run_scale_check(
        arguments.admin_url, arguments.workers, arguments.trials_per_worker
    )

    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(figures, indent=2) + "\n")
    logging.info("figures: %s (written to %s)", figures, arguments.output)
    expected = arguments.workers * arguments.trials_per_worker
    accounted = figures["complete"] + figures["pruned"] + figures["failed"]
    if figures["workers_died"] or accounted != expected:
        logging.error(
            "scale check failed: %d workers died; %d of %d trials accounted for",
            figures["workers_died"],
            accounted,
            expected,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
