"""The CloudFormation stack of cloudformation/stack.yaml: deploy, describe, delete.

Its outputs (bucket, role, private subnets, security group, the database secret)
become ``aws.stack_outputs`` and ``study.secret_id`` of the run's settings.

Tested only against moto's server on loopback, a local stand-in for AWS that
cannot create every resource of the template (Aurora, Secrets Manager): see
tests/test_aws_stack.py for what the stand-in replaces.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from omegaconf import DictConfig

from lib.aws.common import (
    PROJECT_ROOT,
    AwsModeError,
    JobFailedError,
    create_client,
    log_request,
    project_tags,
    wait_for_status,
)

logger = logging.getLogger(__name__)

# Stack output name -> key of aws.stack_outputs.
OUTPUT_KEYS = {
    "BucketName": "bucket",
    "RoleArn": "role_arn",
    "PrivateSubnetIds": "private_subnet_ids",
    "SecurityGroupId": "security_group_id",
    "SecretArn": "secret_arn",
    "ClusterEndpoint": "cluster_endpoint",
    "KmsKeyArn": "kms_key_arn",
}
# The largest template CreateStack accepts inline (TemplateBody).
MAX_TEMPLATE_BYTES = 51_200
STACK_DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
STACK_FAILED = (
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "DELETE_FAILED",
)
NO_CHANGES = "No updates are to be performed"


def template_path(settings) -> Path:
    path = Path(str(settings.aws.template_path))
    return path if path.is_absolute() else PROJECT_ROOT / path


def build_stack_request(settings) -> dict:
    """The CreateStack / UpdateStack request: template, parameters, capabilities."""
    path = template_path(settings)
    if not path.is_file():
        raise AwsModeError(
            f"aws.template_path: {path} not found; it should name "
            "cloudformation/stack.yaml of this project"
        )
    body = path.read_text()
    if len(body.encode()) > MAX_TEMPLATE_BYTES:
        raise AwsModeError(
            f"{path} is {len(body.encode())} bytes, more than the "
            f"{MAX_TEMPLATE_BYTES} CloudFormation accepts inline; shorten it"
        )
    parameters = [
        {"ParameterKey": str(key), "ParameterValue": str(value)}
        for key, value in settings.aws.stack_parameters.items()
    ]
    return {
        "StackName": str(settings.aws.stack_name),
        "TemplateBody": body,
        "Parameters": parameters,
        # The template creates IAM roles (without fixed names).
        "Capabilities": ["CAPABILITY_IAM"],
        "Tags": [tag for tag in project_tags(settings) if tag["Key"] == "project"],
    }


def deploy_stack(settings, dry_run: bool = False, timeout_minutes: int = 90) -> dict:
    """Create the stack, or update it if it exists; wait until it is complete.

    Returns the stack's description, or in a dry run the request that would be
    sent (no AWS call is made).
    """
    request = build_stack_request(settings)
    shown = dict(request, TemplateBody=f"<{template_path(settings)}>")
    if dry_run:
        log_request("CloudFormation CreateStack/UpdateStack", shown, dry_run=True)
        return request
    client = create_client("cloudformation", settings)
    existing = describe_stack(settings)
    if existing is None:
        log_request("CloudFormation CreateStack", shown, dry_run=False)
        client.create_stack(**request, OnFailure="ROLLBACK")
    elif existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise AwsModeError(
            f"stack {request['StackName']} failed to create earlier and cannot be "
            "updated: delete it (delete_stack) and deploy again"
        )
    else:
        log_request("CloudFormation UpdateStack", shown, dry_run=False)
        if not _update_stack(client, request):
            return existing
    return _wait_for_stack(settings, client, timeout_minutes)


def _update_stack(client, request: dict) -> bool:
    """Start an update; False when the stack already matches the template."""
    from botocore.exceptions import ClientError

    try:
        client.update_stack(**request)
    except ClientError as error:
        if NO_CHANGES in str(error):
            logger.info("stack %s is already up to date", request["StackName"])
            return False
        raise
    return True


def _wait_for_stack(settings, client, timeout_minutes: int) -> dict:
    name = str(settings.aws.stack_name)
    try:
        return wait_for_status(
            lambda: describe_stack(settings) or {"StackStatus": "DELETE_COMPLETE"},
            "StackStatus",
            done=STACK_DONE,
            failed=(*STACK_FAILED, "DELETE_COMPLETE"),
            what=f"stack {name}",
            poll_seconds=settings.aws.poll_seconds,
            timeout_seconds=timeout_minutes * 60,
        )
    except JobFailedError as error:
        reason = _first_failure(client, name)
        raise JobFailedError(f"{error}; first failure: {reason}") from error


def _first_failure(client, stack_name: str) -> str:
    """The earliest resource failure in the stack's events: usually the cause."""
    events = client.describe_stack_events(StackName=stack_name)["StackEvents"]
    for event in reversed(events):
        if event["ResourceStatus"].endswith("_FAILED"):
            return (
                f"{event['LogicalResourceId']}: "
                f"{event.get('ResourceStatusReason', 'no reason given')}"
            )
    return "no failed resource in the events"


def describe_stack(settings) -> dict | None:
    """The stack's description, or None when no stack of that name exists."""
    from botocore.exceptions import ClientError

    client = create_client("cloudformation", settings)
    try:
        stacks = client.describe_stacks(StackName=str(settings.aws.stack_name))
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return stacks["Stacks"][0]


def delete_stack(settings, dry_run: bool = False, timeout_minutes: int = 60) -> dict:
    """Delete the stack and wait. The bucket and the key are kept (Retain policy)."""
    request = {"StackName": str(settings.aws.stack_name)}
    log_request("CloudFormation DeleteStack", request, dry_run)
    if dry_run:
        return request
    existing = describe_stack(settings)
    if existing is None:
        logger.info("stack %s does not exist: nothing to delete", request["StackName"])
        return request
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue")
        for p in existing.get("Parameters", [])
    }
    if parameters.get("DeletionProtection") == "true":
        raise AwsModeError(
            f"stack {request['StackName']} protects its database from deletion: "
            "deploy it once more with aws.stack_parameters.DeletionProtection=false, "
            "then delete it"
        )
    client = create_client("cloudformation", settings)
    client.delete_stack(**request)
    wait_for_status(
        lambda: describe_stack(settings) or {"StackStatus": "DELETE_COMPLETE"},
        "StackStatus",
        done=("DELETE_COMPLETE",),
        failed=("DELETE_FAILED",),
        what=f"stack {request['StackName']}",
        poll_seconds=settings.aws.poll_seconds,
        timeout_seconds=timeout_minutes * 60,
    )
    logger.warning(
        "stack %s deleted; its S3 bucket, KMS key and final database snapshot are "
        "kept on purpose: remove them in the console when no longer needed",
        request["StackName"],
    )
    return request


def read_stack_outputs(settings, dry_run: bool = False) -> dict:
    """The outputs the notebooks need, keyed as in ``aws.stack_outputs``.

    A dry run reads nothing and returns ``{}``: the jobs' requests then show
    placeholders where the outputs would go.
    """
    if dry_run:
        logger.info("dry run: stack outputs not read; requests show placeholders")
        return {}
    stack = describe_stack(settings)
    if stack is None:
        raise AwsModeError(
            f"no stack {settings.aws.stack_name} in {settings.aws.region}: deploy it "
            "first (notebooks/00_infrastructure with MODE=sagemaker)"
        )
    found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = sorted(set(OUTPUT_KEYS) - set(found))
    if missing:
        raise AwsModeError(
            f"stack {settings.aws.stack_name} ({stack['StackStatus']}) lacks the "
            f"outputs {', '.join(missing)}; deploy the current template again"
        )
    outputs = {OUTPUT_KEYS[key]: found[key] for key in OUTPUT_KEYS}
    outputs["private_subnet_ids"] = outputs["private_subnet_ids"].split(",")
    logger.info("stack outputs: %s", outputs)
    return outputs


def apply_stack_outputs(settings, outputs: dict) -> DictConfig:
    """A copy of the settings with the outputs in ``aws.stack_outputs`` and the
    database secret as the study's storage (``study.secret_id``)."""
    updated = copy.deepcopy(settings)
    for key, value in outputs.items():
        if key not in updated.aws.stack_outputs:
            raise AwsModeError(f"unknown stack output key {key!r}")
        updated.aws.stack_outputs[key] = value
    if outputs.get("secret_arn"):
        updated.study.secret_id = outputs["secret_arn"]
        updated.study.secret_region = (
            settings.study.secret_region or settings.aws.region
        )
    return updated
