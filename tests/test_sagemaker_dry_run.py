"""MODE=sagemaker with DRY_RUN: every request is printed, nothing is called."""

import os
import subprocess
import sys

import pytest

from lib.notebook import PROJECT_ROOT


@pytest.mark.slow
def test_dry_run_prints_every_request_without_credentials_or_network(tmp_path):
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("AWS_")
    }
    # A closed loopback port: any AWS call that slipped through would fail loudly.
    environment["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lib.pipeline",
            "--mode",
            "sagemaker",
            "--dry-run",
            "--run-dir",
            str(tmp_path / "dry"),
            "--notebooks",
            "00",
            "01",
            "02",
            "04",
        ],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for action in (
        "CloudFormation CreateStack/UpdateStack",
        "SageMaker CreateProcessingJob",
        "SageMaker CreateTrainingJob",
        "SageMaker CreateModel",
        "SageMaker CreateEndpointConfig",
        "SageMaker CreateEndpoint",
    ):
        assert f"would call {action}" in output, action
    assert '"EnableManagedSpotTraining": true' in output
    assert '"LocalPath": "/opt/ml/checkpoints"' in output
    assert not (tmp_path / "dry" / "metrics.json").exists()
