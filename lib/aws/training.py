"""02_tuning as SageMaker training jobs on (by default) ml.p3.8xlarge spot instances.

Every host of every tuning job runs ``lib.sagemaker_training`` with ``task=tune``:
it opens the one study in Aurora (credentials from the secret whose ARN is a
hyperparameter) and runs trials until the study holds ``budget.n_trials``
finished ones; Optuna's RDB storage is what lets them share the work. A final
job (``task=final``) then retrains the best configuration, read from the study,
and leaves the model as ``model.tar.gz`` for hosting.

Tested only against moto's server on loopback, a local stand-in for AWS: it
records the requests but runs no container, so no training job of this project
has run on AWS from here.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

from lib.aws.common import (
    AwsModeError,
    check_name,
    create_client,
    image_uri,
    log_request,
    project_tags,
    s3_url,
    split_s3_url,
    stack_output,
    subnet_ids,
    unique_name,
    wait_for_status,
)
from lib.aws.processing import prepared_data_url

logger = logging.getLogger(__name__)

# What the training container does (lib.sagemaker_training); "all" is one host
# tuning then retraining.
TASKS = ("tune", "final", "all")
CHANNEL = "prepared"
# SageMaker's limits for CreateTrainingJob.
MAX_RUN_LIMIT_SECONDS = 28 * 24 * 3600
MAX_RETRY_LIMIT = 30
# Settings the training container needs to match this run, passed as
# hyperparameters named by their settings key.
PASSED_SETTINGS = (
    "seed",
    "data.validation_fraction",
    "data.fnlwgt",
    "study.objective",
    "threshold.policy",
    "threshold.cost_ratio",
    "budget.n_trials",
    "budget.timeout_minutes",
    "budget.max_epochs",
    "budget.early_stopping_patience",
    "budget.pruner_warmup_epochs",
    "budget.enqueue_defaults",
)


def check_training_settings(training) -> None:
    """Refuse settings SageMaker would reject, before any call is made."""
    for key in ("instance_count", "job_count", "max_run_seconds", "volume_size_gb"):
        if int(training[key]) < 1:
            raise AwsModeError(
                f"aws.training.{key} must be at least 1, got {training[key]}"
            )
    max_run = int(training.max_run_seconds)
    if max_run > MAX_RUN_LIMIT_SECONDS:
        raise AwsModeError(
            f"aws.training.max_run_seconds is {max_run}; SageMaker allows at most "
            f"{MAX_RUN_LIMIT_SECONDS} (28 days)"
        )
    if training.use_spot_instances or training.final_use_spot_instances:
        max_wait = int(training.max_wait_seconds)
        if max_wait < max_run:
            raise AwsModeError(
                f"aws.training.max_wait_seconds ({max_wait}) is less than "
                f"aws.training.max_run_seconds ({max_run}); spot training needs "
                "max_wait >= max_run: raise max_wait_seconds or lower max_run_seconds"
            )
    retries = int(training.max_retry_attempts)
    if not 0 <= retries <= MAX_RETRY_LIMIT:
        raise AwsModeError(
            f"aws.training.max_retry_attempts must be between 0 and {MAX_RETRY_LIMIT}, "
            f"got {retries}"
        )


def training_hyperparameters(settings, task: str, dry_run: bool) -> dict[str, str]:
    """The container's settings: named values, then settings keys as overrides."""
    if task not in TASKS:
        raise AwsModeError(f"task must be one of {TASKS}, got {task!r}")
    hyperparameters = {
        "task": task,
        "study_name": str(settings.study.name),
        "secret_arn": str(stack_output(settings, "secret_arn", dry_run)),
        "secret_region": str(settings.study.secret_region or settings.aws.region),
    }
    for key in PASSED_SETTINGS:
        value = settings
        for part in key.split("."):
            value = value[part]
        # Hydra reads lower-case booleans; SageMaker passes every value as text.
        hyperparameters[key] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return hyperparameters


def build_training_job_request(
    settings,
    job_name: str,
    task: str = "tune",
    dry_run: bool = False,
    instance_type: str | None = None,
    instance_count: int | None = None,
    use_spot_instances: bool | None = None,
) -> dict:
    """The CreateTrainingJob request of one tuning (or the final) job."""
    training = settings.aws.training
    check_training_settings(training)
    check_name(job_name)
    spot = (
        training.use_spot_instances
        if use_spot_instances is None
        else use_spot_instances
    )
    kms_key = stack_output(settings, "kms_key_arn", dry_run)
    stopping = {"MaxRuntimeInSeconds": int(training.max_run_seconds)}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = int(training.max_wait_seconds)
    request = {
        "TrainingJobName": job_name,
        "RoleArn": stack_output(settings, "role_arn", dry_run),
        "AlgorithmSpecification": {
            "TrainingImage": image_uri(settings, "train", dry_run),
            "TrainingInputMode": "File",
        },
        "HyperParameters": training_hyperparameters(settings, task, dry_run),
        "InputDataConfig": [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": prepared_data_url(settings, dry_run),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {
            "S3OutputPath": s3_url(settings, "models", dry_run=dry_run),
            "KmsKeyId": kms_key,
        },
        "ResourceConfig": {
            "InstanceType": str(instance_type or training.instance_type),
            "InstanceCount": int(instance_count or training.instance_count),
            "VolumeSizeInGB": int(training.volume_size_gb),
            "VolumeKmsKeyId": kms_key,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(spot),
        "CheckpointConfig": {
            "S3Uri": s3_url(settings, "checkpoints", job_name, dry_run=dry_run),
            "LocalPath": str(training.checkpoint_local_path),
        },
        "VpcConfig": {
            "SecurityGroupIds": [stack_output(settings, "security_group_id", dry_run)],
            "Subnets": subnet_ids(settings, dry_run),
        },
        "Environment": {"PYTHONUNBUFFERED": "1"},
        "Tags": project_tags(settings),
    }
    if int(training.max_retry_attempts) > 0:
        request["RetryStrategy"] = {
            "MaximumRetryAttempts": int(training.max_retry_attempts)
        }
    return request


def start_tuning_jobs(settings, dry_run: bool = False) -> list[dict]:
    """Start ``aws.training.job_count`` tuning jobs on the shared study.

    Returns their requests; in a dry run nothing is started.
    """
    check_training_settings(settings.aws.training)
    count = int(settings.aws.training.job_count)
    requests = [
        build_training_job_request(
            settings,
            unique_name(f"{settings.aws.s3_prefix}-tune", index if count > 1 else None),
            task="tune",
            dry_run=dry_run,
        )
        for index in range(count)
    ]
    client = None if dry_run else create_client("sagemaker", settings)
    for request in requests:
        log_request("SageMaker CreateTrainingJob", request, dry_run)
        if client is not None:
            client.create_training_job(**request)
    return requests


def start_final_training_job(
    settings, dry_run: bool = False, wait: bool = True, timeout_hours: float = 24
) -> dict:
    """Retrain the study's best configuration on one host; the model goes to S3."""
    training = settings.aws.training
    request = build_training_job_request(
        settings,
        unique_name(f"{settings.aws.s3_prefix}-final"),
        task="final",
        dry_run=dry_run,
        instance_type=str(training.final_instance_type),
        instance_count=1,
        use_spot_instances=bool(training.final_use_spot_instances),
    )
    log_request("SageMaker CreateTrainingJob", request, dry_run)
    if dry_run:
        return request
    create_client("sagemaker", settings).create_training_job(**request)
    if wait:
        wait_for_training_jobs(settings, [request["TrainingJobName"]], timeout_hours)
    return request


def wait_for_training_jobs(
    settings, job_names: list[str], timeout_hours: float = 48
) -> list[dict]:
    """Wait until every job completed; raise with the first failure's reason."""
    client = create_client("sagemaker", settings)
    return [
        wait_for_status(
            lambda name=name: client.describe_training_job(TrainingJobName=name),
            "TrainingJobStatus",
            done=("Completed",),
            failed=("Failed", "Stopped"),
            what=f"training job {name}",
            poll_seconds=settings.aws.poll_seconds,
            timeout_seconds=timeout_hours * 3600,
        )
        for name in job_names
    ]


def download_training_outputs(
    settings, job_name: str, run_dir: str | Path, dry_run: bool = False
) -> Path:
    """Fetch a final job's model and metrics into the run folder.

    ``model.tar.gz`` becomes ``<run_dir>/model`` and ``output.tar.gz`` (metrics.json,
    test_predictions.parquet) lands in ``<run_dir>``, where 03_analysis and
    04_deployment read them in local mode too.
    """
    run_dir = Path(run_dir)
    model_url = model_artifact_url(settings, job_name, dry_run)
    output_url = model_url.rsplit("/", 1)[0] + "/output.tar.gz"
    if dry_run:
        logger.info("would download %s and %s into %s", model_url, output_url, run_dir)
        return run_dir
    s3 = create_client("s3", settings)
    for url, target in ((model_url, run_dir / "model"), (output_url, run_dir)):
        bucket, key = split_s3_url(url)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            # "data" refuses absolute paths, links out of the folder and devices.
            archive.extractall(target, filter="data")
        logger.info("extracted %s into %s", url, target)
    return run_dir


def model_artifact_url(settings, job_name: str, dry_run: bool = False) -> str:
    """S3 URL of a job's ``model.tar.gz`` (asked from SageMaker unless a dry run)."""
    if not dry_run:
        description = create_client("sagemaker", settings).describe_training_job(
            TrainingJobName=job_name
        )
        url = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if url:
            return url
    output = s3_url(settings, "models", dry_run=dry_run)
    bucket, prefix = split_s3_url(output)
    return f"s3://{bucket}/{prefix}/{job_name}/output/model.tar.gz"
