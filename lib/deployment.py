"""Check a served model against the offline one: same records, same answers."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from lib.artifact import load_artifact
from lib.data import FEATURE_COLUMNS, TEST_FILE, read_prepared, read_raw_file

logger = logging.getLogger(__name__)


class DeploymentCheckFailed(RuntimeError):
    """The served model answered differently from the offline one."""


def raw_test_lines(settings, source_lines: list[int]) -> list[str]:
    """Lines of adult.test as published, without their label: what a client sends."""
    text = read_raw_file(TEST_FILE, settings.data).decode("ascii")
    lines = text.splitlines()
    return [lines[number - 1].rsplit(",", 1)[0] for number in source_lines]


def raw_test_records(settings, count: int) -> list[list[str]]:
    """The first ``count`` records of adult.test as lists of 14 raw values."""
    lines = raw_test_lines(settings, list(range(2, 2 + count)))
    return [[value.strip() for value in line.split(",")] for line in lines]


def compare_with_offline(settings, run_dir: Path, n_records: int = 500) -> pl.DataFrame:
    """Start the server locally, send test records as CSV and JSON, compare.

    Returns one row per request format: records sent, the largest difference from
    the offline probabilities, whether every label agrees, and the request time.
    """
    from lib.serving.local import start_local_server

    model_dir = Path(run_dir) / "model"
    test = read_prepared(run_dir).test.head(n_records)
    artifact = load_artifact(model_dir)
    offline = artifact.predict_frame(test)
    offline_labels = np.where(offline >= artifact.threshold, ">50K", "<=50K")
    csv_body = "\n".join(raw_test_lines(settings, test["source_line"].to_list())) + "\n"
    rows = []
    with start_local_server(
        model_dir, log_path=Path(run_dir) / "logs" / "local_server.log"
    ) as server:
        for name, call in (
            ("text/csv (raw adult.test lines)", lambda: server.invoke_csv(csv_body)),
            (
                "application/json",
                lambda: server.invoke_json(test.select(FEATURE_COLUMNS)),
            ),
        ):
            started = time.perf_counter()
            answer = call()
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "request": name,
                    "records": len(answer.probabilities),
                    "max |served - offline|": float(
                        np.max(np.abs(answer.probabilities - offline))
                    ),
                    "labels agree": bool(
                        list(answer.labels) == offline_labels.tolist()
                    ),
                    "milliseconds": round(seconds * 1000, 1),
                }
            )
    table = pl.DataFrame(rows)
    worst = table["max |served - offline|"].max()
    if worst > 1e-6 or not table["labels agree"].all():
        raise DeploymentCheckFailed(
            f"the served model disagrees with the offline one (largest difference "
            f"{worst:.2e}); see {Path(run_dir) / 'logs' / 'local_server.log'}"
        )
    logger.info(
        "Served predictions equal the offline ones (largest difference %.1e)", worst
    )
    return table
