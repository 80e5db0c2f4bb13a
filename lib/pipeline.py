"""The main job: run the notebooks in order with papermill into one run folder.

    python -m lib.pipeline [--budget default|small] [--run-dir DIR] [key=value ...]

Each notebook is read from its percent-format ``.py`` source (the reviewed one),
executed with the same parameters, and saved executed into ``<run>/notebooks``.
Extra ``key=value`` arguments are Hydra overrides passed to every notebook.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lib.config import SettingsError, load_settings, mask_credentials
from lib.notebook import PROJECT_ROOT, configure_logging, resolve_run_dir

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
STATUS_FILE = "run_status.json"


def notebook_sources(selected: list[str] | None = None) -> list[Path]:
    sources = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
    if selected:
        sources = [s for s in sources if s.name[:2] in selected]
    return sources


def run_notebooks(
    run_dir: Path, parameters: dict, selected: list[str] | None = None
) -> list[Path]:
    """Execute the notebooks in order; stop at the first failure with its location."""
    import jupytext
    import papermill

    executed_dir = run_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    sources = notebook_sources(selected)
    for position, source in enumerate(sources, start=1):
        output = executed_dir / f"{source.stem}.ipynb"
        logger.info("[%d/%d] Running %s", position, len(sources), source.name)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            unexecuted = Path(scratch) / f"{source.stem}.ipynb"
            jupytext.write(jupytext.read(source), unexecuted)
            try:
                papermill.execute_notebook(
                    str(unexecuted),
                    str(output),
                    parameters=parameters,
                    kernel_name="python3",
                    cwd=str(PROJECT_ROOT),
                    log_output=True,
                    progress_bar=False,
                )
            except papermill.PapermillExecutionError as error:
                raise NotebookFailed(
                    f"{source.name} failed in cell {error.exec_count}: "
                    f"{error.ename}: {error.evalue}\nThe executed notebook, with the "
                    f"full traceback, is {output}"
                ) from error
        logger.info(
            "[%d/%d] %s done in %.0f s",
            position,
            len(sources),
            source.name,
            time.perf_counter() - started,
        )
        outputs.append(output)
    return outputs


class NotebookFailed(RuntimeError):
    pass


class _CellMarkerFilter(logging.Filter):
    """Hide papermill's "Executing Cell N---" lines; keep what the cells log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(
            ("Executing Cell", "Ending Cell", "Executing notebook", "Executing:")
        )


def write_status(run_dir: Path, status: str, **details) -> None:
    record = {"status": status, "time": dt.datetime.now(dt.UTC).isoformat(), **details}
    text = mask_credentials(json.dumps(record, indent=2))
    (run_dir / STATUS_FILE).write_text(text)


def summarise(run_dir: Path) -> str:
    metrics_path = run_dir / "metrics.json"
    lines = [f"Results are in {run_dir}"]
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        block = metrics[metrics["headline"]]
        lines.append(
            f"Test set ({metrics['n_records']} records): accuracy "
            f"{block['at_0.5']['accuracy']:.4f}, ROC-AUC {block['roc_auc']:.4f}, "
            f"PR-AUC {block['pr_auc']:.4f}, log loss {block['log_loss']:.4f}"
        )
    for name in (
        "metrics.json",
        "model",
        "notebooks",
        "figures",
        "model_card.md",
        "data/row_ledger.json",
    ):
        if (run_dir / name).exists():
            lines.append(f"  {run_dir / name}")
    return "\n".join(lines)


def show_cell_output() -> None:
    """Print what the notebooks log as it is, without a second time stamp."""
    cell_output = logging.getLogger("papermill")
    cell_output.propagate = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    handler.addFilter(_CellMarkerFilter())
    cell_output.addHandler(handler)
    cell_output.setLevel(logging.INFO)


def keep_passwords_out_of_parameters(overrides: list[str]) -> list[str]:
    """Pass a URL that holds a password through the environment, not as a parameter.

    Papermill writes parameters verbatim into every executed notebook. Such an
    override becomes an ``${oc.env:...}`` interpolation that the settings resolve
    inside the kernel, which inherits this process's environment.
    """
    safe = []
    for position, override in enumerate(overrides):
        key, separator, value = override.partition("=")
        if separator and mask_credentials(value) != value:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1].replace("\\'", "'")
            variable = f"ADULT_TABTRANSFORMER_OVERRIDE_{position}"
            os.environ[variable] = value
            safe.append(f"{key}=${{oc.env:{variable}}}")
        else:
            safe.append(override)
    return safe


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lib.pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--budget", default="default", help="default or small")
    parser.add_argument("--mode", default="local", help="local or sagemaker")
    parser.add_argument("--run-dir", default="", help="default: runs/<UTC time>")
    parser.add_argument("--study-name", default="adult-tabtransformer")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="sagemaker mode: print the job specifications only",
    )
    parser.add_argument(
        "--notebooks",
        nargs="*",
        metavar="NN",
        help="run only these notebooks, e.g. 00 01",
    )
    parser.add_argument(
        "--references",
        metavar="DIR",
        help="also copy the executed notebooks into DIR (nbval)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    arguments = parser.parse_args(argv)
    # `--notebooks 00 01 key=value` would otherwise swallow the override.
    selected = arguments.notebooks or []
    arguments.overrides = [n for n in selected if "=" in n] + arguments.overrides
    arguments.notebooks = [n for n in selected if "=" not in n] or None
    for name in arguments.notebooks or []:
        if not (len(name) == 2 and name.isdigit()):
            parser.error(
                f"--notebooks takes two-digit numbers such as 00 01, got {name!r}"
            )
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    configure_logging()
    show_cell_output()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    arguments.overrides = keep_passwords_out_of_parameters(arguments.overrides)
    parameters = {
        "MODE": arguments.mode,
        "RUN_DIR": arguments.run_dir
        or str(Path("runs") / dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")),
        "BUDGET": arguments.budget,
        "STUDY_NAME": arguments.study_name,
        "OVERRIDES": list(arguments.overrides),
        "DRY_RUN": arguments.dry_run,
    }
    try:
        # Fail on a bad setting here, before any kernel starts.
        load_settings(
            [
                f"mode={arguments.mode}",
                f"budget={arguments.budget}",
                *arguments.overrides,
            ]
        )
    except SettingsError as error:
        logger.error("%s", error)
        return 2
    run_dir = resolve_run_dir(parameters["RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters["RUN_DIR"] = str(run_dir)
    write_status(run_dir, "running", parameters=parameters)
    started = time.perf_counter()
    try:
        outputs = run_notebooks(run_dir, parameters, arguments.notebooks)
    except NotebookFailed as error:
        write_status(run_dir, "failed", error=str(error))
        logger.error("%s", error)
        return 1
    minutes = (time.perf_counter() - started) / 60
    write_status(run_dir, "complete", minutes=round(minutes, 2), parameters=parameters)
    if arguments.references:
        copy_references(outputs, Path(arguments.references))
    logger.info("Main job finished in %.1f minutes", minutes)
    print(summarise(run_dir), flush=True)
    return 0


def copy_references(outputs: list[Path], destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        shutil.copy2(output, destination / output.name)
    logger.info("Copied %d executed notebooks to %s", len(outputs), destination)


if __name__ == "__main__":
    sys.exit(main())
