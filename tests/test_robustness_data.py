"""Damaged input files stop preprocessing, say where, and leave nothing complete.

Each case copies the published UCI files into a temporary folder, damages one of
them, and runs the real preprocessing on it (``data.source=path``): through
``lib.data.prepare_data``, and once through the main job's command line. The
marker of a complete preprocessing step is ``data/row_ledger.json``; it must not
be there after a failure, even when an earlier run left one in the same folder.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pipeline_runs import main_job_command

from lib import data
from lib.config import format_override, load_settings
from lib.notebook import PROJECT_ROOT

COLUMNS = (*data.FEATURE_COLUMNS, data.RAW_LABEL_COLUMN)


def published_lines(name: str) -> list[str]:
    packaged = PROJECT_ROOT / "lib" / "data_files" / f"{name}.gz"
    return gzip.decompress(packaged.read_bytes()).decode("ascii").split("\n")


def replace_line(name: str, number: int, new_line: str) -> str:
    lines = published_lines(name)
    lines[number - 1] = new_line
    return "\n".join(lines)


def replace_field(name: str, number: int, column: str, value: str) -> str:
    lines = published_lines(name)
    fields = lines[number - 1].split(", ")
    fields[COLUMNS.index(column)] = value
    lines[number - 1] = ", ".join(fields)
    return "\n".join(lines)


def truncated(name: str, number: int, keep_characters: int) -> str:
    """The file as if its download stopped inside line ``number``."""
    lines = published_lines(name)
    return "\n".join(lines[: number - 1] + [lines[number - 1][:keep_characters]])


def without_field(name: str, number: int, column: str) -> str:
    lines = published_lines(name)
    fields = lines[number - 1].split(", ")
    del fields[COLUMNS.index(column)]
    lines[number - 1] = ", ".join(fields)
    return "\n".join(lines)


@dataclass(frozen=True)
class Fault:
    """One damaged file: which, its text, and where the message must point."""

    file: str
    text: str
    line: int | None
    columns: frozenset[str]  # any of these is a right answer for the column
    also: str = ""  # a phrase the message must hold as well


FAULTS = {
    # Line 1000 cut inside its occupation ("Exec-managerial" -> "Exec-man").
    "truncated file": Fault(
        data.TRAIN_FILE,
        truncated(data.TRAIN_FILE, 1000, 69),
        1000,
        frozenset({"occupation", "relationship"}),
    ),
    "too few fields": Fault(
        data.TRAIN_FILE,
        without_field(data.TRAIN_FILE, 5, "hours_per_week"),
        5,
        frozenset({"hours_per_week", "native_country", "income"}),
    ),
    "too many fields": Fault(
        data.TRAIN_FILE,
        replace_line(data.TRAIN_FILE, 7, published_lines(data.TRAIN_FILE)[6] + ", 1"),
        7,
        frozenset({"income"}),
    ),
    "non-numeric age": Fault(
        data.TRAIN_FILE,
        replace_field(data.TRAIN_FILE, 3, "age", "thirty-eight"),
        3,
        frozenset({"age"}),
    ),
    "unexpected label": Fault(
        data.TEST_FILE,
        replace_field(data.TEST_FILE, 10, "income", "<=50K?"),
        10,
        frozenset({"income"}),
    ),
    "empty file": Fault(data.TEST_FILE, "", None, frozenset(), also="empty"),
    # Still a well-formed record: only the checksum can tell (fnlwgt 83311 -> 83312).
    "checksum mismatch": Fault(
        data.TRAIN_FILE,
        replace_field(data.TRAIN_FILE, 2, "fnlwgt", "83312"),
        2,
        frozenset({"fnlwgt"}),
        also="SHA-256",
    ),
}


def damaged_source(folder: Path, fault: Fault) -> Path:
    """A data.path folder: the published files, one replaced by the damaged text."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (data.TRAIN_FILE, data.TEST_FILE):
        (folder / name).write_text("\n".join(published_lines(name)))
    (folder / fault.file).write_text(fault.text)
    return folder


def path_settings(source: Path):
    return load_settings(
        ["data.source=path", format_override("data.path", str(source))]
    )


def failure_of(fault: Fault, tmp_path: Path) -> tuple[str, Path]:
    """Run prepare_data on the damaged copy; return its message and the run dir."""
    source = damaged_source(tmp_path / "source", fault)
    run_dir = tmp_path / "run"
    with pytest.raises(data.DataError) as caught:
        data.prepare_data(path_settings(source), run_dir)
    return str(caught.value), run_dir


def test_the_cases_really_are_damaged_and_the_copies_are_exact(tmp_path):
    source = tmp_path / "published"
    source.mkdir()
    for name in (data.TRAIN_FILE, data.TEST_FILE):
        (source / name).write_text("\n".join(published_lines(name)))
    # The undamaged copy passes, so each failure below is due to its damage.
    frames, _ = data.load_adult(path_settings(source).data)
    assert frames[data.TRAIN_FILE].height == 32_561
    for label, fault in FAULTS.items():
        original = "\n".join(published_lines(fault.file))
        assert fault.text != original, label
    assert published_lines(data.TRAIN_FILE)[999][:69].endswith("Exec-man")


@pytest.mark.parametrize("label", FAULTS)
def test_a_damaged_file_stops_preprocessing_and_leaves_no_ledger(label, tmp_path):
    fault = FAULTS[label]
    message, run_dir = failure_of(fault, tmp_path)
    assert fault.file in message
    assert not (run_dir / "data" / "row_ledger.json").exists()
    with pytest.raises(data.DataError, match="row_ledger.json is missing"):
        data.read_prepared(run_dir)


@pytest.mark.parametrize("label", FAULTS)
def test_the_message_names_file_line_and_column(label, tmp_path):
    fault = FAULTS[label]
    message, _ = failure_of(fault, tmp_path)
    assert fault.file in message
    assert fault.also in message
    if fault.line is not None:
        assert re.search(rf"\bline {fault.line}\b", message), message
        named = set(re.findall(r"'(\w+)'", message)) & set(COLUMNS)
        assert named and named <= fault.columns, message


def test_a_failed_rerun_does_not_leave_the_previous_ledger(prepared_run_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run_dir / "data", run_dir / "data")
    assert data.read_prepared(run_dir).test.height == 16_281  # complete before
    source = damaged_source(tmp_path / "source", FAULTS["non-numeric age"])
    with pytest.raises(data.DataError):
        data.prepare_data(path_settings(source), run_dir)
    assert not (run_dir / "data" / "row_ledger.json").exists()


def run_main_job(run_dir: Path, source: Path) -> subprocess.CompletedProcess:
    # Overrides go before --notebooks: after it, argparse takes them as notebooks.
    return subprocess.run(
        main_job_command(
            run_dir,
            "data.source=path",
            format_override("data.path", str(source)),
            "--notebooks",
            "00",
            "01",
        ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_main_job_stops_at_preprocessing_and_marks_the_run_failed(tmp_path):
    source = damaged_source(tmp_path / "source", FAULTS["non-numeric age"])
    run_dir = tmp_path / "run"
    result = run_main_job(run_dir, source)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "01_preprocessing.py failed in cell" in output
    assert "DataError" in output and data.TRAIN_FILE in output
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "failed"
    assert data.TRAIN_FILE in status["error"]
    assert not (run_dir / "data" / "row_ledger.json").exists()
    assert (run_dir / "notebooks" / "00_infrastructure.ipynb").is_file()


@pytest.mark.slow
def test_the_main_job_message_names_file_line_and_column(tmp_path):
    source = damaged_source(tmp_path / "source", FAULTS["non-numeric age"])
    result = run_main_job(tmp_path / "run", source)
    output = result.stdout + result.stderr
    assert re.search(r"adult\.data, line 3, column 'age'", output), output[-3000:]
