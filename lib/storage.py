"""Where the Optuna study lives: turn settings into an Optuna storage."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

logger = logging.getLogger(__name__)


def resolve_storage_url(study_settings, run_dir: str | Path) -> str:
    """Return the SQLAlchemy URL of the study storage for these settings."""
    if study_settings.storage:
        return str(study_settings.storage)
    path = (Path(run_dir) / "study.db").resolve()
    return f"sqlite:///{path}"


def create_storage(study_settings, run_dir: str | Path) -> optuna.storages.RDBStorage:
    """Open the RDB storage of the study, with heartbeats so dead trials are retried."""
    url = resolve_storage_url(study_settings, run_dir)
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=study_settings.heartbeat_interval_seconds,
        grace_period=study_settings.heartbeat_grace_seconds,
        failed_trial_callback=optuna.storages.RetryFailedTrialCallback(
            max_retry=study_settings.max_retries
        ),
    )
