"""The notebooks stay paired, parameterised, and free of stale code."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from lib.notebook import PARAMETERS, PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
FIX = "make sync-notebooks"


def code_cells(notebook) -> list[str]:
    return [c.source.strip() for c in notebook.cells if c.cell_type == "code"]


def test_the_five_stages_are_there():
    names = [path.stem for path in NOTEBOOKS]
    assert names[:4] == [
        "00_infrastructure",
        "01_preprocessing",
        "02_tuning",
        "03_analysis",
    ]


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_source_has_an_ipynb_with_the_same_code(source: Path):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing; run `{FIX}`"
    from_source = jupytext.read(source)
    from_ipynb = nbformat.read(paired, as_version=4)
    assert code_cells(from_ipynb) == code_cells(from_source), (
        f"{paired.name} is stale against {source.name}; run `{FIX}`"
    )


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_exactly_one_parameters_cell_declaring_every_parameter(source: Path):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name}: {len(tagged)} cells tagged parameters"
    declared = {
        line.split("=")[0].strip()
        for line in tagged[0].source.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert declared == set(PARAMETERS)
    assert 'MODE = "local"' in tagged[0].source


def test_no_ipynb_without_its_source():
    for paired in (PROJECT_ROOT / "notebooks").glob("*.ipynb"):
        assert paired.with_suffix(".py").is_file(), f"{paired.name} has no .py source"
