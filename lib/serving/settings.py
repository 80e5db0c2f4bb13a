"""Server settings: the ``serving:`` block of the settings, then the environment.

SageMaker configures a serving container through environment variables, so each
setting has one; a variable that is set wins over the YAML default:

================================  ====================  =============================
variable                          setting               default
================================  ====================  =============================
``SAGEMAKER_BIND_TO_PORT``        ``port``              8080
``MODEL_SERVER_HOST``             ``host``              127.0.0.1 (the image: 0.0.0.0)
``SM_MODEL_DIR``                  ``model_dir``         /opt/ml/model
``MODEL_SERVER_WORKERS``          ``workers``           one per CPU core
``MODEL_SERVER_WORKER_CLASS``     ``worker_class``      gthread (or sync)
``MODEL_SERVER_THREADS``          ``threads``           4 request threads per worker
``MODEL_SERVER_TF_THREADS``       ``tf_threads``        CPU cores / workers (>= 1)
``MODEL_SERVER_TIMEOUT``          ``timeout_seconds``   60
``MODEL_SERVER_MAX_BODY_BYTES``   ``max_body_bytes``    6291456 (6 MB)
``MODEL_SERVER_BATCH_SIZE``       ``predict_batch_size``  4096 rows per model call
``MODEL_SERVER_READY_WAIT``       ``ready_wait_seconds``  60
``MODEL_SERVER_BODY_TIMEOUT``     ``body_timeout_seconds``  10
``MODEL_SERVER_KEEPALIVE``        ``keepalive_seconds``   75
``MODEL_SERVER_LOG_LEVEL``        ``log_level``         INFO
================================  ====================  =============================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLES = {
    "port": "SAGEMAKER_BIND_TO_PORT",
    "host": "MODEL_SERVER_HOST",
    "model_dir": "SM_MODEL_DIR",
    "workers": "MODEL_SERVER_WORKERS",
    "worker_class": "MODEL_SERVER_WORKER_CLASS",
    "threads": "MODEL_SERVER_THREADS",
    "tf_threads": "MODEL_SERVER_TF_THREADS",
    "timeout_seconds": "MODEL_SERVER_TIMEOUT",
    "max_body_bytes": "MODEL_SERVER_MAX_BODY_BYTES",
    "predict_batch_size": "MODEL_SERVER_BATCH_SIZE",
    "ready_wait_seconds": "MODEL_SERVER_READY_WAIT",
    "body_timeout_seconds": "MODEL_SERVER_BODY_TIMEOUT",
    "keepalive_seconds": "MODEL_SERVER_KEEPALIVE",
    "log_level": "MODEL_SERVER_LOG_LEVEL",
}
# Settings that are whole numbers >= 1 (port is checked on its own).
_POSITIVE_WHOLE = (
    "workers",
    "threads",
    "tf_threads",
    "timeout_seconds",
    "max_body_bytes",
    "predict_batch_size",
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# gthread: request threads per worker; sync: one request at a time per worker,
# a little faster per request but held up by slow clients.
WORKER_CLASSES = ("gthread", "sync")


class ServingSettingsError(ValueError):
    """A server setting (YAML or environment variable) has an unusable value."""


@dataclass(frozen=True)
class ServingSettings:
    """Everything the server needs to start, resolved and checked."""

    model_dir: Path
    host: str
    port: int
    workers: int
    worker_class: str
    threads: int
    tf_threads: int
    timeout_seconds: int
    max_body_bytes: int
    predict_batch_size: int
    ready_wait_seconds: float
    body_timeout_seconds: float
    keepalive_seconds: int
    log_level: str

    @property
    def concurrency(self) -> int:
        """Requests the server handles at once."""
        per_worker = self.threads if self.worker_class == "gthread" else 1
        return self.workers * per_worker

    @property
    def bind(self) -> str:
        return (
            f"[{self.host}]:{self.port}"
            if ":" in self.host
            else (f"{self.host}:{self.port}")
        )


def load_serving_settings(
    environ: Mapping[str, str] | None = None,
) -> ServingSettings:
    """Read the ``serving:`` block of the project settings, then the environment."""
    from lib.config import load_settings

    serving = load_settings().serving
    return resolve_serving_settings(
        dict(serving), os.environ if environ is None else environ
    )


def resolve_serving_settings(
    defaults: Mapping, environ: Mapping[str, str]
) -> ServingSettings:
    """Combine YAML defaults with environment variables; check every value."""
    raw = {}
    for name, variable in ENVIRONMENT_VARIABLES.items():
        value = environ.get(variable)
        if value is not None and value.strip() != "":
            raw[name] = (value.strip(), variable)
        else:
            raw[name] = (defaults.get(name), f"serving.{name}")
    cores = available_cores()
    workers = _whole(raw, "workers", default=cores)
    values = {
        "model_dir": Path(_text(raw, "model_dir")),
        "host": _text(raw, "host"),
        "port": _port(raw),
        "workers": workers,
        "worker_class": _choice(raw, "worker_class", WORKER_CLASSES),
        "threads": _whole(raw, "threads"),
        "tf_threads": _whole(raw, "tf_threads", default=max(1, cores // workers)),
        "timeout_seconds": _whole(raw, "timeout_seconds"),
        "max_body_bytes": _whole(raw, "max_body_bytes"),
        "predict_batch_size": _whole(raw, "predict_batch_size"),
        "ready_wait_seconds": _seconds(raw, "ready_wait_seconds"),
        "body_timeout_seconds": _seconds(raw, "body_timeout_seconds"),
        "keepalive_seconds": int(_seconds(raw, "keepalive_seconds")),
        "log_level": _log_level(raw),
    }
    return ServingSettings(**values)


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _text(raw: dict, name: str) -> str:
    value, source = raw[name]
    if value is None or str(value).strip() == "":
        raise ServingSettingsError(f"{source} is empty; set it ({_help(name)})")
    return str(value).strip()


def _whole(raw: dict, name: str, default: int | None = None) -> int:
    value, source = raw[name]
    if value is None and default is not None:
        return default
    number = _as_int(value, source, name)
    if number < 1:
        raise ServingSettingsError(
            f"{source} must be at least 1, got {value!r} ({_help(name)})"
        )
    return number


def _port(raw: dict) -> int:
    value, source = raw["port"]
    port = _as_int(value, source, "port")
    if not 1 <= port <= 65535:
        raise ServingSettingsError(
            f"{source} must be a TCP port between 1 and 65535, got {value!r}"
        )
    return port


def _seconds(raw: dict, name: str) -> float:
    value, source = raw[name]
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0.0 <= seconds < float("inf"):
        raise ServingSettingsError(
            f"{source} must be a number of seconds >= 0, got {value!r} ({_help(name)})"
        )
    return seconds


def _choice(raw: dict, name: str, choices: tuple[str, ...]) -> str:
    value, source = raw[name]
    if value not in choices:
        raise ServingSettingsError(
            f"{source} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def _log_level(raw: dict) -> str:
    value, source = raw["log_level"]
    level = str(value).strip().upper()
    if level not in _LOG_LEVELS:
        raise ServingSettingsError(
            f"{source} must be one of {', '.join(_LOG_LEVELS)}, got {value!r}"
        )
    return level


def _as_int(value, source: str, name: str) -> int:
    if isinstance(value, bool):
        value = None  # YAML true/false is not a count
    try:
        return int(str(value).strip())
    except ValueError:
        raise ServingSettingsError(
            f"{source} must be a whole number, got {value!r} ({_help(name)})"
        ) from None


def _help(name: str) -> str:
    return f"environment variable {ENVIRONMENT_VARIABLES[name]} or serving.{name}"
