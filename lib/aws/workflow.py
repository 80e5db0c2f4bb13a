"""The sagemaker branch of each notebook, one call per notebook step.

Like the rest of lib/aws, this is tested against moto's server on loopback (a local
stand-in for AWS) and in dry-run mode; it has not run against an AWS account.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from lib.aws.hosting import delete_endpoint, deploy_endpoint, invoke_endpoint
from lib.aws.processing import start_processing_job
from lib.aws.stack import apply_stack_outputs, deploy_stack, read_stack_outputs
from lib.aws.training import (
    download_training_outputs,
    model_artifact_url,
    start_final_training_job,
    start_tuning_jobs,
    wait_for_training_jobs,
)

logger = logging.getLogger(__name__)

JOBS_FILE = "sagemaker_jobs.json"


def with_stack_outputs(settings: DictConfig, dry_run: bool) -> DictConfig:
    """Settings completed with the stack's outputs (placeholders in a dry run)."""
    return apply_stack_outputs(settings, read_stack_outputs(settings, dry_run=dry_run))


def prepare_infrastructure(settings: DictConfig, dry_run: bool) -> DictConfig:
    deploy_stack(settings, dry_run=dry_run)
    return with_stack_outputs(settings, dry_run)


def run_preprocessing(settings: DictConfig, dry_run: bool) -> dict:
    return start_processing_job(with_stack_outputs(settings, dry_run), dry_run=dry_run)


def run_tuning_and_final_training(
    settings: DictConfig, run_dir: Path, dry_run: bool
) -> dict:
    """Tuning jobs on one shared study, then the final retrain; outputs to run_dir."""
    settings = with_stack_outputs(settings, dry_run)
    tuning_jobs = start_tuning_jobs(settings, dry_run=dry_run)
    if not dry_run:
        wait_for_training_jobs(
            settings, [job["TrainingJobName"] for job in tuning_jobs]
        )
    final = start_final_training_job(settings, dry_run=dry_run)
    record = {
        "tuning_jobs": [job["TrainingJobName"] for job in tuning_jobs],
        "final_job": final["TrainingJobName"],
        "dry_run": dry_run,
    }
    if not dry_run:
        download_training_outputs(settings, final["TrainingJobName"], run_dir)
    (Path(run_dir) / JOBS_FILE).write_text(json.dumps(record, indent=2))
    return record


def deploy_and_try_endpoint(
    settings: DictConfig, run_dir: Path, records: list[list], dry_run: bool
) -> dict:
    """Serve the final job's model on an endpoint and send it a few records."""
    settings = with_stack_outputs(settings, dry_run)
    jobs_path = Path(run_dir) / JOBS_FILE
    if not jobs_path.is_file():
        raise FileNotFoundError(
            f"{jobs_path} is missing: run notebooks/02_tuning with MODE=sagemaker "
            "first, it records the final training job there"
        )
    final_job = json.loads(jobs_path.read_text())["final_job"]
    requests = deploy_endpoint(
        settings, model_artifact_url(settings, final_job, dry_run), dry_run=dry_run
    )
    if dry_run:
        return {"requests": requests}
    return {"requests": requests, "answer": invoke_endpoint(settings, records)}


def remove_endpoint(settings: DictConfig, dry_run: bool) -> dict:
    return delete_endpoint(settings, dry_run=dry_run)
