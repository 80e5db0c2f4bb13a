"""04_deployment in sagemaker mode: model, endpoint configuration, endpoint.

The model pairs the project's serving image (docker/serve.Dockerfile, the
SageMaker inference contract on port 8080) with the ``model.tar.gz`` of the final
training job. The container runs with network isolation: it needs nothing but
its model.

Tested only against moto's server on loopback, a local stand-in for AWS: it
records the requests and answers invocations with canned results, so no endpoint
of this project has served on AWS from here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence

from lib.aws.common import (
    AwsModeError,
    JobFailedError,
    check_name,
    create_client,
    image_uri,
    log_request,
    project_tags,
    stack_output,
    unique_name,
    wait_for_status,
)

logger = logging.getLogger(__name__)

VARIANT_NAME = "AllTraffic"


def build_model_request(
    settings, model_name: str, model_data_url: str, dry_run: bool = False
) -> dict:
    """The CreateModel request: serving image plus the trained artifact."""
    check_name(model_name)
    if not str(model_data_url).startswith("s3://") and not dry_run:
        raise AwsModeError(
            f"model_data_url must be the s3:// URL of a model.tar.gz, got "
            f"{model_data_url!r}; take it from model_artifact_url(settings, job_name)"
        )
    return {
        "ModelName": model_name,
        "ExecutionRoleArn": stack_output(settings, "role_arn", dry_run),
        "PrimaryContainer": {
            "Image": image_uri(settings, "serve", dry_run),
            "ModelDataUrl": str(model_data_url),
            "Mode": "SingleModel",
        },
        "EnableNetworkIsolation": True,
        "Tags": project_tags(settings),
    }


def build_endpoint_config_request(settings, config_name: str, model_name: str) -> dict:
    """The CreateEndpointConfig request: one variant with all the traffic."""
    check_name(config_name)
    hosting = settings.aws.hosting
    return {
        "EndpointConfigName": config_name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "ModelName": model_name,
                "InstanceType": str(hosting.instance_type),
                "InitialInstanceCount": int(hosting.initial_instance_count),
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": project_tags(settings),
    }


def build_endpoint_request(settings, config_name: str) -> dict:
    endpoint_name = str(settings.aws.hosting.endpoint_name)
    check_name(endpoint_name)
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": config_name,
        "Tags": project_tags(settings),
    }


def deploy_endpoint(
    settings,
    model_data_url: str,
    dry_run: bool = False,
    wait: bool = True,
    timeout_minutes: int = 30,
) -> dict:
    """Create the model and endpoint configuration, then create (or switch) the
    endpoint to it and wait until it is in service.

    Returns the three requests under ``model``, ``endpoint_config`` and
    ``endpoint``; a dry run only builds and logs them.
    """
    prefix = str(settings.aws.hosting.endpoint_name)
    model_name = unique_name(f"{prefix}-model")
    config_name = unique_name(f"{prefix}-config")
    requests = {
        "model": build_model_request(settings, model_name, model_data_url, dry_run),
        "endpoint_config": build_endpoint_config_request(
            settings, config_name, model_name
        ),
        "endpoint": build_endpoint_request(settings, config_name),
    }
    log_request("SageMaker CreateModel", requests["model"], dry_run)
    log_request("SageMaker CreateEndpointConfig", requests["endpoint_config"], dry_run)
    log_request("SageMaker CreateEndpoint", requests["endpoint"], dry_run)
    if dry_run:
        return requests
    client = create_client("sagemaker", settings)
    client.create_model(**requests["model"])
    client.create_endpoint_config(**requests["endpoint_config"])
    endpoint_name = requests["endpoint"]["EndpointName"]
    if _describe_endpoint(client, endpoint_name) is None:
        client.create_endpoint(**requests["endpoint"])
    else:
        logger.info(
            "endpoint %s exists: switching it to %s", endpoint_name, config_name
        )
        client.update_endpoint(
            EndpointName=endpoint_name, EndpointConfigName=config_name
        )
    if wait:
        wait_for_status(
            lambda: client.describe_endpoint(EndpointName=endpoint_name),
            "EndpointStatus",
            done=("InService",),
            failed=("Failed", "OutOfService"),
            what=f"endpoint {endpoint_name}",
            poll_seconds=settings.aws.poll_seconds,
            timeout_seconds=timeout_minutes * 60,
        )
    return requests


def _describe_endpoint(client, endpoint_name: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ValidationException":
            return None
        raise


def records_to_csv(records: Sequence[Sequence]) -> str:
    """Records in the Adult column order as ``text/csv`` without a header."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    return buffer.getvalue()


def invoke_endpoint(settings, records: Sequence[Sequence]) -> dict | list:
    """Send records as CSV, ask for JSON; return the decoded answer."""
    runtime = create_client("sagemaker-runtime", settings)
    response = runtime.invoke_endpoint(
        EndpointName=str(settings.aws.hosting.endpoint_name),
        ContentType="text/csv",
        Accept="application/json",
        Body=records_to_csv(records).encode(),
    )
    body = response["Body"].read().decode()
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise JobFailedError(
            f"endpoint {settings.aws.hosting.endpoint_name} answered "
            f"{response.get('ContentType')!r} that is not JSON: {body[:200]!r}"
        ) from error


def delete_endpoint(settings, dry_run: bool = False) -> dict:
    """Delete the endpoint, its configuration and its model; they cost by the hour."""
    client = None if dry_run else create_client("sagemaker", settings)
    endpoint_name = str(settings.aws.hosting.endpoint_name)
    request = {"EndpointName": endpoint_name}
    log_request(
        "SageMaker DeleteEndpoint (with its config and model)", request, dry_run
    )
    if client is None:
        return request
    endpoint = _describe_endpoint(client, endpoint_name)
    if endpoint is None:
        logger.info("endpoint %s does not exist: nothing to delete", endpoint_name)
        return request
    config_name = endpoint["EndpointConfigName"]
    config = client.describe_endpoint_config(EndpointConfigName=config_name)
    client.delete_endpoint(EndpointName=endpoint_name)
    client.delete_endpoint_config(EndpointConfigName=config_name)
    for variant in config["ProductionVariants"]:
        client.delete_model(ModelName=variant["ModelName"])
    logger.info(
        "deleted endpoint %s, config %s and its model", endpoint_name, config_name
    )
    return dict(request, EndpointConfigName=config_name)
