"""What every notebook does first: check its parameters, load settings, set up logs.

Papermill injects parameters as plain assignments after the cell tagged
``parameters``; nothing stops it from injecting a misspelt name or a number where
text was meant. :func:`start` checks every UPPER_CASE name in the notebook's
namespace against the declared parameters, coerces what is safe to coerce (a study
called ``2024`` stays the string ``"2024"``; a list may arrive as YAML text) and
refuses the rest with a message naming the parameter.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from lib.config import (
    SettingsError,
    format_override,
    load_settings,
    mask_credentials,
)

logger = logging.getLogger(__name__)

# Name -> (type, meaning). Every notebook declares all of them in its parameters cell.
PARAMETERS = {
    "MODE": (str, "local or sagemaker"),
    "RUN_DIR": (str, "run folder; empty means runs/interactive in the project"),
    "BUDGET": (str, "budget profile: default or small"),
    "STUDY_NAME": (str, "name of the Optuna study"),
    "OVERRIDES": (list, "extra Hydra overrides such as 'tf_keras.batch_size=256'"),
    "DRY_RUN": (bool, "sagemaker mode: print what would be created, create nothing"),
}
_PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def collect_parameters(namespace: Mapping) -> dict:
    """Validated, coerced parameters from a notebook's global namespace."""
    unknown = sorted(
        name
        for name, value in namespace.items()
        if _PARAMETER_NAME.match(name)
        and name not in PARAMETERS
        and not callable(value)
        and not isinstance(value, type(sys))
    )
    if unknown:
        raise SettingsError(
            f"unknown notebook parameter(s) {unknown}; the parameters are "
            f"{sorted(PARAMETERS)}. Pass other settings through OVERRIDES."
        )
    missing = [name for name in PARAMETERS if name not in namespace]
    if missing:
        raise SettingsError(f"the parameters cell does not define {missing}")
    return {name: coerce_parameter(name, namespace[name]) for name in PARAMETERS}


def coerce_parameter(name: str, value):
    expected, meaning = PARAMETERS[name]
    if expected is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SettingsError(
                f"parameter {name} ({meaning}) must be text, got {value!r}"
            )
        return str(value)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise SettingsError(
            f"parameter {name} ({meaning}) must be True or False, got {value!r}"
        )
    if expected is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else []
            except yaml.YAMLError as error:
                raise SettingsError(
                    f"parameter {name}: {value!r} is not YAML"
                ) from error
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(
                f"parameter {name} ({meaning}) must be a list of strings, got {value!r}"
            )
        return value
    raise SettingsError(f"parameter {name}: unsupported type {expected}")


def resolve_run_dir(run_dir: str) -> Path:
    path = Path(run_dir) if run_dir else Path("runs") / "interactive"
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return path.resolve()


def settings_from_parameters(parameters: Mapping) -> DictConfig:
    overrides = [
        format_override("mode", parameters["MODE"]),
        f"budget={parameters['BUDGET']}",
        format_override("study.name", parameters["STUDY_NAME"]),
        format_override("dry_run", parameters["DRY_RUN"]),
        *parameters["OVERRIDES"],
    ]
    return load_settings(overrides)


def configure_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Readable log lines on stdout (and in a file); quiet TensorFlow's C++ chatter."""
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
    root.setLevel(level)
    for noisy in (
        "tensorflow",
        "absl",
        "matplotlib",
        "PIL",
        "h5py",
        "botocore",
        "urllib3",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


def start(namespace: Mapping, notebook: str) -> tuple[DictConfig, Path]:
    """Check parameters, load settings, set up logging; return settings and run dir."""
    parameters = collect_parameters(namespace)
    settings = settings_from_parameters(parameters)
    run_dir = resolve_run_dir(parameters["RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir = str(run_dir)
    configure_logging(settings.log_level, run_dir / "logs" / f"{notebook}.log")
    logger.info(
        "%s: mode %s, budget %s, run folder %s",
        notebook,
        settings.mode,
        parameters["BUDGET"],
        run_dir,
    )
    return settings, run_dir


def save_settings(settings: DictConfig, run_dir: Path) -> Path:
    path = run_dir / "settings.yaml"
    path.write_text(mask_credentials(OmegaConf.to_yaml(settings)))
    return path
