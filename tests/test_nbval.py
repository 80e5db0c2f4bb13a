"""The reference notebooks: current, portable, and re-run by nbval.

``make references`` runs the main job with the small budget and keeps the executed
notebooks in ``tests/notebooks``. The slow test here re-runs those notebooks, in
order, with ``pytest --nbval-lax`` into a fresh run folder: every cell must run,
and the cells tagged ``nbval-check-output`` must print what the references
printed, after ``tests/notebooks/nbval_sanitize.cfg`` has masked what
legitimately changes (times, durations, addresses, the run folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from lib.notebook import PROJECT_ROOT

SOURCES = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
REFERENCES_DIR = PROJECT_ROOT / "tests" / "notebooks"
SANITIZE_FILE = REFERENCES_DIR / "nbval_sanitize.cfg"
FIX = "make references"
INJECTED = "injected-parameters"
CHECKED = "nbval-check-output"
# The notebook whose outputs are compared, and how many of its cells at least.
ANALYSIS = "03_analysis"
MIN_CHECKED_CELLS = 5
RUN_DIR_LINE = re.compile(r"^RUN_DIR = .*$", re.MULTILINE)


def reference_path(source: Path) -> Path:
    return REFERENCES_DIR / f"{source.stem}.ipynb"


def read_reference(source: Path) -> nbformat.NotebookNode:
    path = reference_path(source)
    if not path.is_file():
        pytest.fail(f"{path.name} has no reference notebook; run `{FIX}`")
    return nbformat.read(path, as_version=4)


def code_cells(notebook, skip_tag: str | None = None) -> list[str]:
    return [
        cell.source.strip()
        for cell in notebook.cells
        if cell.cell_type == "code"
        and (skip_tag is None or skip_tag not in cell.metadata.get("tags", []))
    ]


def tagged(notebook, tag: str) -> list:
    return [c for c in notebook.cells if tag in c.metadata.get("tags", [])]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_reference_runs_the_code_of_its_notebook(source: Path):
    reference = read_reference(source)
    assert code_cells(reference, skip_tag=INJECTED) == code_cells(
        jupytext.read(source)
    ), f"{reference_path(source).name} is stale against {source.name}; run `{FIX}`"
    assert len(tagged(reference, INJECTED)) == 1, (
        f"{reference_path(source).name} was not executed by papermill; run `{FIX}`"
    )


def test_no_reference_without_its_notebook():
    names = {source.stem for source in SOURCES}
    for path in REFERENCES_DIR.glob("*.ipynb"):
        assert path.stem in names, f"{path.name} has no notebooks/{path.stem}.py"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_references_hold_nothing_machine_specific(source: Path):
    text = reference_path(source).read_text()
    assert str(PROJECT_ROOT) not in text, (
        f"{reference_path(source).name} holds absolute paths of this machine; "
        f"run `{FIX}` (it makes them relative)"
    )
    assert '"image/png"' not in text, "figures belong in runs, not in references"
    injected = tagged(read_reference(source), INJECTED)[0].source
    assert 'RUN_DIR = "tests/notebooks/reference-run"' in injected


def test_the_analysis_reference_checks_its_stable_outputs():
    source = PROJECT_ROOT / "notebooks" / f"{ANALYSIS}.py"
    checked = tagged(read_reference(source), CHECKED)
    assert len(checked) >= MIN_CHECKED_CELLS
    for cell in checked:
        assert cell.outputs, f"checked cell without output: {cell.source[:60]!r}"
        assert all(o.output_type != "error" for o in cell.outputs)


def sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    for regex, replacement in get_sanitize_patterns(SANITIZE_FILE.read_text()):
        text = re.sub(regex, replacement, text)
    return text


@pytest.mark.parametrize(
    ("reference", "rerun"),
    [
        (
            "12:01:02 INFO lib.storage: study storage: "
            "sqlite:///tests/notebooks/reference-run/study.db (every 30 s)",
            "16:45:59 INFO lib.storage: study storage: "
            "sqlite:////tmp/pytest-of-ci/pytest-7/t0/reference-run/study.db "
            "(every 31 s)",
        ),
        ("created 2026-12-04T15:30:40+00:00", "created 2027-01-05T01:02:03.5Z"),
        ("<Figure at 0x7f3a2c1d9e50>", "<Figure at 0x55d0c0ffee00>"),
        ("trained in 22.1 s, 350ms", "trained in 19.8 s, 12ms"),
        ("12%|#2        | 3/25 [00:01<00:09, 2.4it/s]", "100%|##########| 25/25"),
        (
            "a\nI0000 00:00:1796399676.667412   27159 port.cc:153] oneDNN on\nb",
            "a\nb",
        ),
    ],
)
def test_the_sanitizer_masks_what_changes_between_runs(reference, rerun):
    assert sanitize(reference) == sanitize(rerun)


@pytest.mark.parametrize(
    ("reference", "rerun"),
    [
        ("ROC-AUC 0.912", "ROC-AUC 0.913"),
        ("| Male | 10,860 |", "| Male | 10,861 |"),
        ("threshold 0.319", "threshold 0.320"),
    ],
)
def test_the_sanitizer_leaves_results_alone(reference, rerun):
    assert sanitize(reference) != sanitize(rerun)


def prepare_rerun(destination: Path, run_dir: Path) -> list[Path]:
    """Copies of the references that write into ``run_dir`` instead."""
    destination.mkdir(parents=True)
    copies = []
    for source in SOURCES:
        notebook = read_reference(source)
        (cell,) = tagged(notebook, INJECTED)
        cell.source, count = RUN_DIR_LINE.subn(
            f"RUN_DIR = {str(run_dir)!r}", cell.source
        )
        assert count == 1, f"{source.stem}: no RUN_DIR line in {cell.source!r}"
        copy = destination / reference_path(source).name
        nbformat.write(notebook, copy)
        copies.append(copy)
    return copies


def run_nbval(notebooks: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    # The kernels import lib from this checkout even without an editable install.
    python_path = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    environment = {
        **os.environ,
        "PYTHONPATH": python_path,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(SANITIZE_FILE),
            "--nbval-cell-timeout=900",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--rootdir",
            str(cwd),
            "-q",
            *map(str, notebooks),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1500,
        env=environment,
    )


@pytest.mark.slow
def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    # The harness itself, on a cheap notebook: a checked cell whose output differs
    # fails; one that differs only in what the sanitizer masks passes, and so does
    # an unchecked one.
    cells = [
        # (source, tags, output recorded in the reference)
        ("print('took 3.2 s at 12:00:01')", [CHECKED], "took 9.9 s at 08:15:00\n"),
        ("print(2 + 2)", [CHECKED], "5\n"),
        ("print('anything')", [], "something else\n"),
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            source,
            metadata={"tags": tags},
            execution_count=number,
            outputs=[nbformat.v4.new_output("stream", text=text)],
        )
        for number, (source, tags, text) in enumerate(cells, start=1)
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    result = run_nbval([path], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed, 2 passed" in output, output
    assert "probe.ipynb::Cell 1" in output


@pytest.mark.slow
def test_the_reference_notebooks_rerun_with_nbval(tmp_path):
    # Named like the references' run folder, which the sanitizer masks in both.
    run_dir = tmp_path / "reference-run"
    copies = prepare_rerun(tmp_path / "notebooks", run_dir)
    result = run_nbval(copies, tmp_path)
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    cells = sum(len(code_cells(nbformat.read(c, as_version=4))) for c in copies)
    assert f"{cells} passed" in output, output
    assert (run_dir / "model_card.md").is_file()
    assert (run_dir / "figures" / "roc_pr_curves.png").is_file()
