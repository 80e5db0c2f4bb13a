"""The images of AWS mode: Dockerfiles, their ignore files, and build_and_push.sh.

There is no Docker engine here, so the Dockerfiles are checked as text (base image,
exec-form entry points, every installed package pinned by a lock file) and the
script is run with bad arguments and in its DRY_RUN mode, which prints the
commands instead of running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
SCRIPT = DOCKER / "build_and_push.sh"
OWN_IMAGES = {
    "preprocess": "lib.aws.processing_entry",
    "train": "lib.sagemaker_training",
}
USAGE = "usage: docker/build_and_push.sh TAG MODE REPOSITORY"


def run_script(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(environment)
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_script_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_script_uses_strict_shell_options():
    assert "set -euo pipefail" in SCRIPT.read_text().splitlines()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((), "expected 3 arguments (TAG MODE REPOSITORY), got 0"),
        (("0.1.0", "train"), "expected 3 arguments (TAG MODE REPOSITORY), got 2"),
        (("0.1.0", "gpu", "adult"), "MODE 'gpu' is not one of: preprocess train serve"),
        (("bad tag", "train", "adult"), "TAG 'bad tag' is not a valid image tag"),
        (("0.1.0", "train", "Adult"), "REPOSITORY 'Adult' is not a valid ECR"),
    ],
)
def test_bad_arguments_get_the_usage_message(arguments, message):
    result = run_script(*arguments, DRY_RUN="1")
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert USAGE in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("mode", sorted(OWN_IMAGES))
def test_dry_run_prints_the_build_and_push_of_the_tagged_image(mode):
    result = run_script(
        "0.1.0",
        mode,
        "adult-tabtransformer",
        DRY_RUN="1",
        AWS_ACCOUNT_ID="123456789012",
        AWS_REGION="eu-west-1",
    )
    assert result.returncode == 0, result.stderr
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    image = f"{registry}/adult-tabtransformer:{mode}-0.1.0"
    assert result.stdout.splitlines() == [
        "+ aws ecr get-login-password --region eu-west-1 | docker login --username "
        f"AWS --password-stdin {registry}",
        f"+ docker build --platform linux/amd64 --file {DOCKER}/{mode}.Dockerfile "
        f"--tag {image} {REPO_ROOT}",
        f"+ docker push {image}",
    ]


def test_serve_mode_builds_the_serving_engineers_dockerfile():
    result = run_script("0.1.0", "serve", "adult-tabtransformer", DRY_RUN="1")
    if (DOCKER / "serve.Dockerfile").exists():
        assert result.returncode == 0, result.stderr
        assert f"--file {DOCKER}/serve.Dockerfile" in result.stdout
        assert "adult-tabtransformer:serve-0.1.0" in result.stdout
    else:
        assert result.returncode == 2
        assert "docker/serve.Dockerfile does not exist" in result.stderr


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def locked_versions() -> dict[str, str]:
    pins = {}
    for lock in (REPO_ROOT / "requirements.lock", DOCKER / "train-gpu.lock"):
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==")
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@pytest.mark.parametrize(("mode", "module"), sorted(OWN_IMAGES.items()))
def test_dockerfile_is_supported_pinned_and_exec_form(mode, module):
    instructions = dockerfile_instructions(DOCKER / f"{mode}.Dockerfile")
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entrypoint == ["python", "-m", module]
    json.loads(dict(instructions)["CMD"])  # exec form: a JSON array
    module_file = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert module_file.is_file(), f"{module} does not exist"

    (install,) = [a for i, a in instructions if i == "RUN" and "pip install" in a]
    assert "--constraint /tmp/requirements.lock" in install
    words = install.split("&&")[0].split()
    packages = [w.strip('"') for w in words[2:] if not w.startswith(("-", "/"))]
    pins = locked_versions()
    for package in packages:
        name = re.sub(r"\[.*\]", "", package)
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{package} is not pinned"


@pytest.mark.parametrize("mode", sorted(OWN_IMAGES))
def test_each_dockerfile_has_an_ignore_file_that_keeps_what_it_copies(mode):
    ignore = DOCKER / f"{mode}.Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything out, then only what the image needs
    kept = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    instructions = dockerfile_instructions(DOCKER / f"{mode}.Dockerfile")
    for instruction, arguments in instructions:
        if instruction == "COPY":
            sources = arguments.split()[:-1]
            for source in sources:
                assert source.rstrip("/") in kept, (
                    f"{source} is excluded from the context"
                )
                assert (REPO_ROOT / source).exists()
