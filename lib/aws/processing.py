"""01_preprocessing as a SageMaker processing job with the project's preprocess image.

The raw UCI files are verified and uploaded to ``s3://<bucket>/<prefix>/<run>/raw``;
the job runs ``python -m lib.aws.processing_entry`` (the same ``lib.data`` code as
local mode) and writes the prepared parquet files and the row ledger to
``.../<run>/prepared``, the channel the training jobs read.

Tested only against moto's server on loopback, a local stand-in for AWS: it
accepts and records the request but runs no container, so no processing job of
this project has run on AWS from here.
"""

from __future__ import annotations

import logging

from lib.aws.common import (
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
from lib.config import format_override

logger = logging.getLogger(__name__)

# Paths inside the processing container.
INPUT_DIR = "/opt/ml/processing/input/raw"
OUTPUT_DIR = "/opt/ml/processing/output"
PREPARED_DIR = f"{OUTPUT_DIR}/data"
ENTRY_MODULE = "lib.aws.processing_entry"


def raw_data_url(settings, dry_run: bool = False) -> str:
    return s3_url(settings, "raw", dry_run=dry_run)


def prepared_data_url(settings, dry_run: bool = False) -> str:
    """Where the processing job puts the prepared data; the training channel."""
    return s3_url(settings, "prepared", dry_run=dry_run)


def upload_raw_data(settings, dry_run: bool = False) -> str:
    """Verify both UCI files from the configured source and upload them to S3."""
    from lib.data import TEST_FILE, TRAIN_FILE, read_raw_file

    target = raw_data_url(settings, dry_run)
    contents = {
        name: read_raw_file(name, settings.data) for name in (TRAIN_FILE, TEST_FILE)
    }
    sizes = {name: len(content) for name, content in contents.items()}
    if dry_run:
        logger.info("would upload %s to %s", sizes, target)
        return target
    bucket, prefix = split_s3_url(target)
    s3 = create_client("s3", settings)
    for name, content in contents.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=content)
    logger.info("uploaded %s to %s", sizes, target)
    return target


def data_overrides(settings) -> list[str]:
    """The settings preprocessing depends on, for the container's own settings."""
    return [
        format_override("seed", settings.seed),
        format_override("data.validation_fraction", settings.data.validation_fraction),
        format_override("data.fnlwgt", settings.data.fnlwgt),
    ]


def build_processing_job_request(
    settings, job_name: str, dry_run: bool = False
) -> dict:
    """The CreateProcessingJob request of the preprocessing step."""
    processing = settings.aws.processing
    kms_key = stack_output(settings, "kms_key_arn", dry_run)
    arguments = ["--input", INPUT_DIR, "--output", OUTPUT_DIR]
    for override in data_overrides(settings):
        arguments += ["--override", override]
    return {
        "ProcessingJobName": job_name,
        "RoleArn": stack_output(settings, "role_arn", dry_run),
        "AppSpecification": {
            "ImageUri": image_uri(settings, "preprocess", dry_run),
            "ContainerEntrypoint": ["python", "-m", ENTRY_MODULE],
            "ContainerArguments": arguments,
        },
        "ProcessingInputs": [
            {
                "InputName": "raw",
                "S3Input": {
                    "S3Uri": raw_data_url(settings, dry_run),
                    "LocalPath": INPUT_DIR,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "prepared",
                    "S3Output": {
                        "S3Uri": prepared_data_url(settings, dry_run),
                        "LocalPath": PREPARED_DIR,
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ],
            "KmsKeyId": kms_key,
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": int(processing.instance_count),
                "InstanceType": str(processing.instance_type),
                "VolumeSizeInGB": int(processing.volume_size_gb),
                "VolumeKmsKeyId": kms_key,
            }
        },
        "StoppingCondition": {
            "MaxRuntimeInSeconds": int(processing.max_runtime_seconds)
        },
        "NetworkConfig": {
            "VpcConfig": {
                "SecurityGroupIds": [
                    stack_output(settings, "security_group_id", dry_run)
                ],
                "Subnets": subnet_ids(settings, dry_run),
            }
        },
        "Environment": {"PYTHONUNBUFFERED": "1"},
        "Tags": project_tags(settings),
    }


def start_processing_job(
    settings, dry_run: bool = False, wait: bool = True, timeout_minutes: int = 60
) -> dict:
    """Upload the raw data, start the preprocessing job and (by default) wait for it.

    Returns the request; in a dry run nothing is uploaded or started.
    """
    upload_raw_data(settings, dry_run)
    request = build_processing_job_request(
        settings, unique_name(f"{settings.aws.s3_prefix}-preprocess"), dry_run
    )
    log_request("SageMaker CreateProcessingJob", request, dry_run)
    if dry_run:
        return request
    client = create_client("sagemaker", settings)
    client.create_processing_job(**request)
    if wait:
        name = request["ProcessingJobName"]
        wait_for_status(
            lambda: client.describe_processing_job(ProcessingJobName=name),
            "ProcessingJobStatus",
            done=("Completed",),
            failed=("Failed", "Stopped"),
            what=f"processing job {name}",
            poll_seconds=settings.aws.poll_seconds,
            timeout_seconds=timeout_minutes * 60,
        )
    return request
