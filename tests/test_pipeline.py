"""The main job end to end: the notebooks run by papermill with the small budget."""

import json
import subprocess

import nbformat
import pytest
from pipeline_runs import main_job_command

from lib.notebook import PROJECT_ROOT


@pytest.mark.slow
def test_main_job_runs_every_notebook_into_one_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        main_job_command(run_dir),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Results are in {run_dir}" in result.stdout

    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "complete"
    for name in (
        "00_infrastructure",
        "01_preprocessing",
        "02_tuning",
        "03_analysis",
        "04_deployment",
    ):
        executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        tags = [cell.metadata.get("tags", []) for cell in executed.cells]
        assert ["injected-parameters"] in tags, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_records"] == 16_281
    ledger = json.loads((run_dir / "data" / "row_ledger.json").read_text())
    assert [f["records_kept"] for f in ledger["files"]] == [32_561, 16_281]
    assert (run_dir / "model" / "manifest.json").is_file()
    assert (run_dir / "settings.yaml").is_file()
    assert (run_dir / "figures" / "roc_pr_curves.png").stat().st_size > 10_000


def test_an_unknown_setting_stops_before_any_notebook_runs(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        main_job_command(
            run_dir,
            "tf_keras.no_such_setting=1",
        ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no_such_setting" in result.stdout + result.stderr
    assert not run_dir.exists()


def test_a_failing_notebook_is_reported_with_its_cell_and_marks_the_run_failed(
    tmp_path,
):
    run_dir = tmp_path / "run"
    # 02_tuning needs the output of 01_preprocessing, which is not there.
    result = subprocess.run(
        main_job_command(
            run_dir,
            "--notebooks",
            "02",
        ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "02_tuning.py failed in cell" in output
    assert "run notebooks/01_preprocessing first" in output
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()
