"""Paths as the committed figures record them: inside the project, or not at all.

The results files are committed, so a path on the machine that measured them
(a home folder, a scratch run) is replaced by a placeholder.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = "(outside the project)"


def describe_path(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return OUTSIDE


def describe_command(script: str, arguments: list[str]) -> str:
    """The command line, with every argument that names a path described."""
    shown = [
        describe_path(argument) if Path(argument).exists() else argument
        for argument in arguments
    ]
    return " ".join([script, *shown])
