"""The main job as tests start it: `python -m lib.pipeline` in its own process."""

from __future__ import annotations

import sys
from pathlib import Path


def main_job_command(
    run_dir: Path, *arguments: str, budget: str = "small"
) -> list[str]:
    """The runner's command line; ``arguments`` follow the budget and run folder."""
    return [
        sys.executable,
        "-m",
        "lib.pipeline",
        "--budget",
        budget,
        "--run-dir",
        str(run_dir),
        *arguments,
    ]
