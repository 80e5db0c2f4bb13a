"""Settings: the YAML under lib/conf composed with Hydra, overridden by callers.

Notebooks receive papermill parameters and the command line receives ``key=value``
pairs; both become Hydra overrides, so each setting has exactly one home in YAML.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

MODES = ("local", "sagemaker")


class SettingsError(ValueError):
    """A setting or notebook parameter is unknown, of the wrong type or out of range."""


def load_settings(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose lib/conf/config.yaml with Hydra overrides such as ``budget=small``."""
    GlobalHydra.instance().clear()
    refused = None
    try:
        with initialize_config_module(config_module="lib.conf", version_base=None):
            settings = compose(config_name="config", overrides=list(overrides))
    except (ConfigCompositionException, OverrideParseException) as error:
        cause = mask_credentials(str(error.__cause__ or error))
        shown = [mask_credentials(o) for o in overrides]
        refused = f"cannot apply overrides {shown}: {cause}"
    finally:
        GlobalHydra.instance().clear()
    if refused:
        # Raised outside the handler: the original exception, which repeats any
        # password given in an override, must not travel along as its context.
        raise SettingsError(refused)
    OmegaConf.resolve(settings)
    validate_settings(settings)
    return settings


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")


def mask_credentials(text: str) -> str:
    """Hide the password of any URL in ``text`` (``scheme://user:***@host``)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def validate_settings(settings: DictConfig) -> None:
    """Reject values that would only fail later, after expensive work started."""
    if settings.mode not in MODES:
        raise SettingsError(f"mode must be one of {MODES}, got {settings.mode!r}")
    fraction = settings.data.validation_fraction
    if not 0.0 < fraction < 0.5:
        raise SettingsError(
            f"data.validation_fraction must be in (0, 0.5), got {fraction!r}"
        )
    if settings.data.fnlwgt not in ("drop", "feature", "weight"):
        raise SettingsError(
            f"data.fnlwgt must be drop, feature or weight, got {settings.data.fnlwgt!r}"
        )
    if settings.threshold.policy not in ("max_f1", "max_accuracy", "cost_ratio"):
        raise SettingsError(
            "threshold.policy must be max_f1, max_accuracy or cost_ratio, "
            f"got {settings.threshold.policy!r}"
        )
    if settings.mode == "sagemaker":
        _check_aws_training(settings)
    if settings.study.objective not in ("roc_auc", "log_loss", "pr_auc"):
        raise SettingsError(
            "study.objective must be roc_auc, log_loss or pr_auc, "
            f"got {settings.study.objective!r}"
        )


def _check_aws_training(settings: DictConfig) -> None:
    from lib.aws.common import AwsModeError
    from lib.aws.training import check_training_settings

    try:
        check_training_settings(settings.aws.training)
    except AwsModeError as error:
        raise SettingsError(str(error)) from None


def format_override(key: str, value: Any) -> str:
    """Render one override so Hydra parses it back to the same value and type.

    Strings are always quoted, so a study called ``2024`` stays a string; lists and
    mappings go through YAML flow style.
    """
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"{key}='{escaped}'"
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{key}={value!r}"
    if isinstance(value, (Sequence, Mapping)):
        rendered = OmegaConf.to_yaml(OmegaConf.create({"v": value})).strip()
        return f"{key}={_flow_yaml(value)}" if rendered else f"{key}=[]"
    raise SettingsError(f"cannot pass {key}={value!r} of type {type(value).__name__}")


def _flow_yaml(value: Any) -> str:
    if isinstance(value, Mapping):
        items = ", ".join(f"{k}: {_flow_yaml(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow_yaml(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)
