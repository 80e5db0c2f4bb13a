"""SageMaker training entry point: ``python -m lib.sagemaker_training [train]``.

SageMaker starts the training image as ``<image> train``; this module then runs
the project's tuning code (``lib.tuning``) in the container layout:

| what | variable | default under /opt/ml |
| --- | --- | --- |
| prepared data (channel) | ``SM_CHANNEL_PREPARED`` | ``input/data/prepared`` |
| hyperparameters | ``SM_HPS`` (JSON) | ``input/config/hyperparameters.json`` |
| hosts | ``SM_HOSTS``, ``SM_CURRENT_HOST`` | ``input/config/resourceconfig.json`` |
| final model (model.tar.gz) | ``SM_MODEL_DIR`` | ``model`` |
| metrics, test predictions | ``SM_OUTPUT_DATA_DIR`` | ``output/data`` |
| checkpoints, synced with S3 | ``SM_CHECKPOINT_DIR`` | ``checkpoints`` |
| failure reason | ``SM_FAILURE_FILE`` | ``output/failure`` |

``OPT_ML`` moves every default at once (the tests point it at a temporary tree).

The ``task`` hyperparameter says what to do: ``tune`` runs trials on the study
until it holds ``budget.n_trials`` finished ones (every host of every tuning job
does this on the same study); ``final`` retrains the study's best configuration,
read from the study wherever that trial ran, and writes the model; ``all`` does
both on a single host. The study lives in the database named by the
``secret_arn`` hyperparameter (Aurora in AWS mode); without one it is an SQLite
file in the checkpoint folder. Either way a job restarted after a spot
interruption continues the study, and the final retrain resumes from its last
epoch checkpoint. On a host with several GPUs the model trains under
``tf.distribute.MirroredStrategy``.

On any error the reason goes to the failure file, which SageMaker shows as the
job's FailureReason, and the process exits with status 1.

A local stand-in, not AWS: this module has been run here with the ``SM_*``
variables and ``/opt/ml`` folders pointed at a temporary tree; no training job of
this project has run on AWS from the development machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TASKS = ("tune", "final", "all")
CHANNEL = "prepared"
# Hyperparameters with their own meaning; every other one is a settings override
# named by its key (for example ``budget.n_trials``).
NAMED_HYPERPARAMETERS = ("task", "study_name", "secret_arn", "secret_region")
# SageMaker shows at most this many characters of the failure file.
FAILURE_REASON_LIMIT = 1024


class TrainingJobError(RuntimeError):
    """The container's inputs do not allow the job to run."""


@dataclass(frozen=True)
class ContainerLayout:
    data_dir: Path
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    failure_file: Path
    hyperparameters: dict[str, str]
    current_host: str
    hosts: list[str]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        root = Path(env.get("OPT_ML", "/opt/ml"))
        config_dir = root / "input" / "config"
        hosts, current_host = _read_hosts(env, config_dir)
        return cls(
            data_dir=Path(
                env.get(f"SM_CHANNEL_{CHANNEL.upper()}", root / "input/data" / CHANNEL)
            ),
            model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", root / "output/data")),
            checkpoint_dir=Path(env.get("SM_CHECKPOINT_DIR", root / "checkpoints")),
            failure_file=failure_file_path(env),
            hyperparameters=_read_hyperparameters(env, config_dir),
            current_host=current_host,
            hosts=hosts,
        )

    @property
    def host_checkpoint_dir(self) -> Path:
        # Every host of a job syncs the same S3 prefix: each keeps its own folder.
        return self.checkpoint_dir / self.current_host


def failure_file_path(environ: Mapping[str, str]) -> Path:
    root = Path(environ.get("OPT_ML", "/opt/ml"))
    return Path(environ.get("SM_FAILURE_FILE", root / "output/failure"))


def _read_hyperparameters(env: Mapping[str, str], config_dir: Path) -> dict[str, str]:
    if env.get("SM_HPS"):
        raw = json.loads(env["SM_HPS"])
    else:
        path = config_dir / "hyperparameters.json"
        raw = json.loads(path.read_text()) if path.is_file() else {}
    return {str(key): str(value) for key, value in raw.items()}


def _read_hosts(env: Mapping[str, str], config_dir: Path) -> tuple[list[str], str]:
    if env.get("SM_HOSTS") and env.get("SM_CURRENT_HOST"):
        return json.loads(env["SM_HOSTS"]), env["SM_CURRENT_HOST"]
    path = config_dir / "resourceconfig.json"
    if path.is_file():
        config = json.loads(path.read_text())
        return list(config["hosts"]), config["current_host"]
    return ["algo-1"], "algo-1"


def settings_overrides(layout: ContainerLayout) -> list[str]:
    """Hydra overrides that give this container the settings of the run."""
    from lib.config import format_override

    hyperparameters = layout.hyperparameters
    overrides = ["mode=sagemaker"]
    if hyperparameters.get("study_name"):
        overrides.append(format_override("study.name", hyperparameters["study_name"]))
    secret_arn = hyperparameters.get("secret_arn", "")
    if secret_arn:
        overrides.append(format_override("study.secret_id", secret_arn))
        if hyperparameters.get("secret_region"):
            region = hyperparameters["secret_region"]
            overrides.append(format_override("study.secret_region", region))
    else:
        study_file = (layout.host_checkpoint_dir / "study.db").resolve()
        overrides.append(format_override("study.storage", f"sqlite:///{study_file}"))
    for key, value in hyperparameters.items():
        if key not in NAMED_HYPERPARAMETERS:
            # Plain key=value: Hydra parses numbers and booleans from the text.
            overrides.append(f"{key}={value}")
    return overrides


def check_task(layout: ContainerLayout) -> str:
    task = layout.hyperparameters.get("task", "all")
    if task not in TASKS:
        raise TrainingJobError(
            f"hyperparameter task must be one of {TASKS}, got {task!r}"
        )
    if task == "all" and len(layout.hosts) > 1:
        raise TrainingJobError(
            f"task=all needs one host, this job has {len(layout.hosts)}: run task=tune "
            "jobs on many hosts, then one task=final job"
        )
    ledger = layout.data_dir / "row_ledger.json"
    if not ledger.is_file():
        raise TrainingJobError(
            f"no prepared data in {layout.data_dir} (row_ledger.json is missing): the "
            f"'{CHANNEL}' channel must point at the processing job's output"
        )
    return task


def choose_distribution_strategy():
    """MirroredStrategy over all GPUs when there are several, else the default."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        logger.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return strategy
    logger.info("training on %s", "one GPU" if gpus else "the CPU")
    return tf.distribute.get_strategy()


def run_task(task: str, layout: ContainerLayout, run_dir: Path) -> None:
    from lib.config import load_settings
    from lib.storage import create_storage
    from lib.tuning import create_study, optimize, train_final_model

    settings = load_settings(settings_overrides(layout))
    settings.run_dir = str(run_dir)
    (run_dir / "data").symlink_to(layout.data_dir.resolve(), target_is_directory=True)
    layout.host_checkpoint_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "task %s on %s (%d host(s)), study %s",
        task,
        layout.current_host,
        len(layout.hosts),
        settings.study.name,
    )
    with choose_distribution_strategy().scope():
        study = create_study(settings, create_storage(settings.study, run_dir))
        if task in ("tune", "all"):
            optimize(settings, study, settings.budget.n_trials, run_dir)
        if task in ("final", "all"):
            train_final_model(
                settings,
                study,
                run_dir,
                checkpoint_dir=layout.host_checkpoint_dir / "final",
            )
            save_outputs(run_dir, layout)


def save_outputs(run_dir: Path, layout: ContainerLayout) -> None:
    """The artifact into the model folder; metrics and predictions beside it."""
    shutil.copytree(run_dir / "model", layout.model_dir, dirs_exist_ok=True)
    layout.output_data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "test_predictions.parquet"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, layout.output_data_dir / name)
    logger.info("model written to %s", layout.model_dir)


def write_failure(failure_file: Path, error: BaseException) -> None:
    reason = f"{type(error).__name__}: {error}"[:FAILURE_REASON_LIMIT]
    # A failure to write the reason must not hide the error itself.
    with contextlib.suppress(OSError):
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        failure_file.write_text(reason)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # SageMaker passes "train"; nothing else is accepted.
    parser.add_argument("command", nargs="?", default="train", choices=["train"])
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    failure_file = failure_file_path(os.environ)
    try:
        layout = ContainerLayout.from_environment()
        task = check_task(layout)
        with tempfile.TemporaryDirectory(prefix="adult-run-") as run_dir:
            run_task(task, layout, Path(run_dir))
    except Exception as error:
        logger.exception("training job failed")
        write_failure(failure_file, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
