"""What every AWS call of the project shares: clients, names, S3 places, image URIs.

boto3 is built the ordinary way, so it honours ``AWS_ENDPOINT_URL``: the tests
point it at moto's server on loopback, a local stand-in for AWS, never at AWS.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_TAG = "adult-tabtransformer"
# SageMaker resource names: letters, digits and single hyphens, at most 63 long.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
IMAGE_MODES = ("preprocess", "train", "serve")


class AwsModeError(ValueError):
    """A setting of the ``aws:`` block is missing or wrong for what was asked."""


class JobFailedError(RuntimeError):
    """A stack, job or endpoint ended in a failed state; the message says why."""


def create_client(service: str, settings) -> Any:
    """A boto3 client in the configured region (endpoint from AWS_ENDPOINT_URL)."""
    import boto3

    return boto3.session.Session(region_name=settings.aws.region).client(service)


def log_request(action: str, request: dict, dry_run: bool) -> dict:
    """Log the full request; it never holds a credential (secrets go by ARN)."""
    verb = "would call" if dry_run else "calling"
    logger.info("%s %s:\n%s", verb, action, json.dumps(request, indent=2, default=str))
    return request


def placeholder(what: str) -> str:
    """Stands for a value only AWS knows, in the requests of a dry run."""
    return f"<{what}>"


def stack_output(settings, key: str, dry_run: bool) -> Any:
    """One value of ``aws.stack_outputs``; a placeholder in a dry run when unset."""
    value = settings.aws.stack_outputs[key]
    if value in (None, "", []):
        if dry_run:
            return placeholder(f"stack output {key}")
        raise AwsModeError(
            f"aws.stack_outputs.{key} is not set: run notebooks/00_infrastructure "
            "in sagemaker mode (or settings = apply_stack_outputs(settings, "
            "read_stack_outputs(settings))) before starting jobs"
        )
    return value


def subnet_ids(settings, dry_run: bool) -> list[str]:
    value = stack_output(settings, "private_subnet_ids", dry_run)
    return [value] if isinstance(value, str) else [str(each) for each in value]


def run_name(settings) -> str:
    """Name of this run in S3 and job names: ``aws.run_name`` or the run folder's."""
    if settings.aws.run_name:
        name = str(settings.aws.run_name)
    elif settings.run_dir:
        name = Path(str(settings.run_dir)).name
    else:
        name = "interactive"
    return re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "run"


def s3_url(settings, *parts: str, dry_run: bool) -> str:
    """``s3://<bucket>/<s3_prefix>/<run>/<parts...>``."""
    bucket = stack_output(settings, "bucket", dry_run)
    keys = [str(settings.aws.s3_prefix).strip("/"), run_name(settings), *parts]
    return f"s3://{bucket}/" + "/".join(key.strip("/") for key in keys if key)


def split_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise AwsModeError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def account_id(settings, dry_run: bool) -> str:
    if settings.aws.images.account_id:
        return str(settings.aws.images.account_id)
    if dry_run:
        return placeholder("account id")
    return create_client("sts", settings).get_caller_identity()["Account"]


def image_uri(settings, mode: str, dry_run: bool) -> str:
    """URI of the project's image for ``mode``, as docker/build_and_push.sh tags it."""
    if mode not in IMAGE_MODES:
        raise AwsModeError(f"image mode must be one of {IMAGE_MODES}, got {mode!r}")
    images = settings.aws.images
    if images[mode]:
        return str(images[mode])
    registry = f"{account_id(settings, dry_run)}.dkr.ecr.{settings.aws.region}"
    return f"{registry}.amazonaws.com/{images.repository}:{mode}-{images.tag}"


def unique_name(prefix: str, index: int | None = None) -> str:
    """``<prefix>-<UTC time>[-<index>]``, cut to the 63 characters SageMaker allows."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = stamp if index is None else f"{stamp}-{index}"
    name = f"{prefix[: 62 - len(suffix)].rstrip('-')}-{suffix}"
    check_name(name)
    return name


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise AwsModeError(
            f"{name!r} is not a valid SageMaker name: use letters, digits and "
            "hyphens, at most 63 characters, starting with a letter or digit"
        )


def project_tags(settings) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "run", "Value": run_name(settings)},
    ]


def wait_for_status(
    describe: Callable[[], dict],
    status_key: str,
    done: tuple[str, ...],
    failed: tuple[str, ...],
    what: str,
    poll_seconds: float,
    timeout_seconds: float,
) -> dict:
    """Poll ``describe`` until its status is in ``done``; raise on ``failed``."""
    deadline = time.monotonic() + timeout_seconds
    last_status = None
    while True:
        description = describe()
        status = description[status_key]
        if status != last_status:
            logger.info("%s: %s", what, status)
            last_status = status
        if status in done:
            return description
        if status in failed:
            reason = description.get("FailureReason") or description.get(
                "StackStatusReason", "no reason given"
            )
            raise JobFailedError(f"{what} ended {status}: {reason}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what} is still {status} after {timeout_seconds:.0f} s; look at it "
                "in the AWS console or raise the timeout"
            )
        time.sleep(poll_seconds)
