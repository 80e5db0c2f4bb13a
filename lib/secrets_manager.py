"""Database credentials from AWS Secrets Manager, turned into a SQLAlchemy URL.

The secret holds the JSON that CloudFormation generates for an RDS/Aurora
database: ``username``, ``password``, ``host``, ``port`` and ``dbname`` (other keys
such as ``engine`` are ignored). The password is kept inside SQLAlchemy's ``URL``
object, whose ``str`` and ``repr`` mask it; nothing here logs or raises it.

The boto3 client is built the ordinary way, so it honours ``AWS_ENDPOINT_URL``
(and ``AWS_ENDPOINT_URL_SECRETS_MANAGER``): the tests point it at moto's server on
loopback, a local stand-in for AWS.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("username", "password", "host", "dbname")
DEFAULT_MYSQL_PORT = 3306
MYSQL_DRIVER = "mysql+pymysql"


class SecretError(RuntimeError):
    """The database secret could not be read or does not have the expected shape."""


@dataclass(frozen=True)
class DatabaseSecret:
    """Connection fields of one database secret; ``repr`` leaves the password out."""

    username: str
    password: str = field(repr=False)
    host: str
    port: int
    dbname: str

    def to_url(self) -> URL:
        """Return a ``mysql+pymysql`` URL; SQLAlchemy escapes every character."""
        return URL.create(
            MYSQL_DRIVER,
            username=self.username,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.dbname,
            # utf8mb4 so study and parameter names outside Latin-1 are stored intact.
            query={"charset": "utf8mb4"},
        )


def resolve_region(configured_region: str | None) -> str:
    """Pick the region: the setting, then AWS_REGION, then AWS_DEFAULT_REGION."""
    region = (
        configured_region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise SecretError(
            "no AWS region for Secrets Manager: set study.secret_region (for example "
            "study.secret_region=eu-west-1) or the AWS_REGION environment variable"
        )
    return region


def fetch_database_secret(secret_id: str, region: str | None = None) -> DatabaseSecret:
    """Read the secret ``secret_id`` (name or ARN) and check its fields."""
    import boto3
    import botocore.exceptions

    region_name = resolve_region(region)
    client = boto3.session.Session().client("secretsmanager", region_name=region_name)
    try:
        with _wire_logging_off():
            response = client.get_secret_value(SecretId=secret_id)
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "unknown")
        raise SecretError(
            f"cannot read secret {secret_id!r} in {region_name} ({code}): check "
            "study.secret_id, study.secret_region and that this role may call "
            "secretsmanager:GetSecretValue on it"
        ) from error
    except botocore.exceptions.BotoCoreError as error:
        raise SecretError(
            f"cannot reach Secrets Manager in {region_name} for secret {secret_id!r}: "
            f"{error}; check the network, AWS credentials and AWS_ENDPOINT_URL"
        ) from error
    secret = parse_database_secret(response.get("SecretString"), secret_id)
    logger.info(
        "database secret %s: user %s on %s:%s/%s",
        secret_id,
        secret.username,
        secret.host,
        secret.port,
        secret.dbname,
    )
    return secret


@contextmanager
def _wire_logging_off() -> Iterator[None]:
    # At DEBUG level botocore logs whole response bodies, the secret's password
    # included; mute that logger for the one call that fetches it.
    wire_logger = logging.getLogger("botocore.parsers")
    was_disabled = wire_logger.disabled
    wire_logger.disabled = True
    try:
        yield
    finally:
        wire_logger.disabled = was_disabled


def parse_database_secret(secret_string: str | None, secret_id: str) -> DatabaseSecret:
    """Turn the secret's JSON text into a DatabaseSecret, naming any missing key."""
    if not secret_string:
        raise SecretError(
            f"secret {secret_id!r} has no SecretString: store the database fields "
            f"{', '.join(REQUIRED_KEYS)} (and port) as a JSON string"
        )
    try:
        fields = json.loads(secret_string)
    except json.JSONDecodeError:
        # `from None`: the decode error carries the whole secret text in `.doc`.
        raise SecretError(
            f"secret {secret_id!r} is not valid JSON: it must be an object with "
            f"{', '.join(REQUIRED_KEYS)} and port"
        ) from None
    if not isinstance(fields, dict):
        raise SecretError(f"secret {secret_id!r} must hold a JSON object")
    # An empty password is valid for MySQL; empty names and hosts are not.
    missing = [
        key
        for key in REQUIRED_KEYS
        if fields.get(key) is None or (key != "password" and fields[key] == "")
    ]
    if missing:
        raise SecretError(
            f"secret {secret_id!r} lacks {', '.join(missing)} (keys present: "
            f"{', '.join(sorted(fields)) or 'none'})"
        )
    try:
        port = int(fields.get("port") or DEFAULT_MYSQL_PORT)
    except (TypeError, ValueError):
        raise SecretError(
            f"secret {secret_id!r} has a port that is not a number"
        ) from None
    return DatabaseSecret(
        username=str(fields["username"]),
        password=str(fields["password"]),
        host=str(fields["host"]),
        port=port,
        dbname=str(fields["dbname"]),
    )


def database_url_from_secret(secret_id: str, region: str | None = None) -> URL:
    """Fetch the secret; return its ``mysql+pymysql`` URL (str() masks the password)."""
    return fetch_database_secret(secret_id, region).to_url()
