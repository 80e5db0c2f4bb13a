"""AWS mode: the CloudFormation stack and the SageMaker jobs, through boto3 directly.

Each function builds the exact request it sends (CreateStack, CreateProcessingJob,
CreateTrainingJob, CreateModel, CreateEndpointConfig, CreateEndpoint), logs it, and
with ``dry_run=True`` returns it without calling AWS at all, so no credentials are
needed to see what a run would create.

A local stand-in, not AWS: this project's tests exercise every call here against
moto's server on loopback (boto3 honours ``AWS_ENDPOINT_URL``). No processing,
training or hosting job of this project has run on AWS from the development
machine; the requests follow the SageMaker API reference.

A notebook cell calls one function:

- ``deploy_stack(settings, dry_run=DRY_RUN)`` and ``delete_stack(settings)``
- ``settings = apply_stack_outputs(settings, read_stack_outputs(settings))``
- ``start_processing_job(settings, dry_run=DRY_RUN)``
- ``start_tuning_jobs(settings, dry_run=DRY_RUN)``, ``wait_for_training_jobs(...)``
- ``start_final_training_job(settings, dry_run=DRY_RUN)``, then
  ``download_training_outputs(settings, job_name, run_dir)``
- ``deploy_endpoint(settings, model_data_url, dry_run=DRY_RUN)``,
  ``invoke_endpoint(settings, records)``, ``delete_endpoint(settings)``
"""

from lib.aws.common import AwsModeError, JobFailedError
from lib.aws.hosting import (
    build_endpoint_config_request,
    build_endpoint_request,
    build_model_request,
    delete_endpoint,
    deploy_endpoint,
    invoke_endpoint,
)
from lib.aws.processing import (
    build_processing_job_request,
    start_processing_job,
    upload_raw_data,
)
from lib.aws.stack import (
    apply_stack_outputs,
    delete_stack,
    deploy_stack,
    describe_stack,
    read_stack_outputs,
)
from lib.aws.training import (
    build_training_job_request,
    check_training_settings,
    download_training_outputs,
    model_artifact_url,
    start_final_training_job,
    start_tuning_jobs,
    wait_for_training_jobs,
)

__all__ = [
    "AwsModeError",
    "JobFailedError",
    "apply_stack_outputs",
    "build_endpoint_config_request",
    "build_endpoint_request",
    "build_model_request",
    "build_processing_job_request",
    "build_training_job_request",
    "check_training_settings",
    "delete_endpoint",
    "delete_stack",
    "deploy_endpoint",
    "deploy_stack",
    "describe_stack",
    "download_training_outputs",
    "invoke_endpoint",
    "model_artifact_url",
    "read_stack_outputs",
    "start_final_training_job",
    "start_processing_job",
    "start_tuning_jobs",
    "upload_raw_data",
    "wait_for_training_jobs",
]
