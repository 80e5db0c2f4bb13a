"""Run every benchmark, one after another, each in its own process.

    .venv/bin/python benchmarks/run_all.py [--run-dir runs/<run>] [--skip NAME ...]

Always: training_throughput.py, then quality.py (given --run-dir, on that run's
study). Optional, when their scripts exist: serving_benchmark.py (on
<run-dir>/model when given, else it picks the newest run's model) and
study_scale_check.py (needs the MariaDB server on 127.0.0.1:3306). Each writes its
own figures under benchmarks/results/. One at a time, so no benchmark slows another
down on the shared cores. Exits non-zero when any step that ran failed.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
REQUIRED = ("training_throughput", "quality")
OPTIONAL = ("serving_benchmark", "study_scale_check")

logger = logging.getLogger("run_all")


def step_arguments(name: str, run_dir: Path | None) -> list[str]:
    if name == "quality" and run_dir:
        return ["--run-dir", str(run_dir)]
    if name == "serving_benchmark" and run_dir:
        return ["--model-dir", str(run_dir / "model")]
    return []


def planned_steps(skipped: set[str]) -> list[str]:
    steps = [name for name in REQUIRED if name not in skipped]
    for name in OPTIONAL:
        if name in skipped:
            continue
        if (BENCHMARKS / f"{name}.py").is_file():
            steps.append(name)
        else:
            logger.info("%s.py is not there; skipping that optional step", name)
    return steps


def step_command(name: str, run_dir: Path | None) -> list[str]:
    return [
        sys.executable,
        str(BENCHMARKS / f"{name}.py"),
        *step_arguments(name, run_dir),
    ]


def run_step(name: str, run_dir: Path | None) -> tuple[int, float]:
    command = step_command(name, run_dir)
    logger.info("Running %s", " ".join(command))
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, check=False)
    return completed.returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="finished main-job run folder for quality.py and serving_benchmark.py",
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=REQUIRED + OPTIONAL,
        metavar="NAME",
        help=f"steps to leave out, among {', '.join(REQUIRED + OPTIONAL)}",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands, run nothing"
    )
    arguments = parser.parse_args(argv)
    if arguments.run_dir and not arguments.run_dir.is_dir():
        parser.error(f"--run-dir {arguments.run_dir}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    steps = planned_steps(set(arguments.skip))
    if arguments.dry_run:
        for name in steps:
            print(" ".join(step_command(name, arguments.run_dir)))
        return 0
    outcomes = {}
    for name in steps:
        outcomes[name] = run_step(name, arguments.run_dir)
    for name, (code, seconds) in outcomes.items():
        state = "ok" if code == 0 else f"FAILED (exit code {code})"
        logger.info("%-20s %s in %.0f s", name, state, seconds)
    return 1 if any(code != 0 for code, _ in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
