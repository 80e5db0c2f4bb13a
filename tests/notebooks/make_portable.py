"""Make the nbval reference notebooks portable; `make references` runs it last.

    python tests/notebooks/make_portable.py tests/notebooks

Papermill writes the absolute paths of this machine (the run folder, the project,
its virtual environment) into the executed notebooks, and every figure as a
base64 PNG. This rewrites paths under the project as relative ones, drops the
images (nbval does not compare them) and papermill's timings, so a reference
holds nothing machine-specific and changes only when an output does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Output data nbval skips when comparing, and that would only bloat the repository.
DROPPED_DATA = ("image/png", "image/jpeg", "image/svg+xml")
# Papermill metadata kept: what the notebook was run with.
KEPT_PAPERMILL_KEYS = ("parameters", "version")


def relative_to_project(text: str) -> str:
    root = str(PROJECT_ROOT)
    return text.replace(root + "/", "").replace(root, ".")


def make_portable(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip images and timings, then make project paths relative (in place)."""
    papermill = notebook.metadata.get("papermill", {})
    notebook.metadata["papermill"] = {
        key: papermill[key] for key in KEPT_PAPERMILL_KEYS if key in papermill
    }
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            for mime in DROPPED_DATA:
                output.get("data", {}).pop(mime, None)
    text = relative_to_project(nbformat.writes(notebook))
    return nbformat.reads(text, as_version=4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of reference notebooks")
    arguments = parser.parse_args(argv)
    paths = sorted(arguments.folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print(f"no NN_*.ipynb notebooks in {arguments.folder}", file=sys.stderr)
        return 1
    for path in paths:
        portable = make_portable(nbformat.read(path, as_version=4))
        nbformat.write(portable, path)
        print(f"made {path} portable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
