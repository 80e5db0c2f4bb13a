"""Shared fixtures: the real MariaDB server and the local AWS stand-in (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MYSQL_ADMIN_URL = os.environ.get(
    "TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def find_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """URL of the real MariaDB/MySQL server; fails (not skips) under CI when absent."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(MYSQL_ADMIN_URL)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as error:
        message = f"MariaDB is not reachable at {MYSQL_ADMIN_URL}: {error.orig}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return MYSQL_ADMIN_URL


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """Start moto's server on loopback: a LOCAL STAND-IN for AWS, not AWS itself.

    Sets AWS_ENDPOINT_URL and dummy credentials for the whole session so boto3
    clients built by the code under test talk to the stand-in.
    """
    port = find_free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        wait_for_port(port, process)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(scope="session")
def small_settings():
    from lib.config import load_settings

    return load_settings(["budget=small"])


@pytest.fixture(scope="session")
def prepared_run_dir(tmp_path_factory, small_settings):
    """A run folder holding the preprocessed real Adult data (done once a session)."""
    from lib.data import prepare_data

    run_dir = tmp_path_factory.mktemp("prepared-run")
    prepare_data(small_settings, run_dir)
    return run_dir


# A small, fast network: enough to exercise every layer type.
TINY_HYPERPARAMETERS = {
    "n_blocks": 1,
    "n_heads": 2,
    "embedding_dim": 16,
    "mlp_layers": 1,
    "mlp_units": 32,
    "n_frequencies": 4,
}


@pytest.fixture(scope="session")
def trained_artifact_dir(tmp_path_factory, prepared_run_dir, small_settings):
    """A real artifact: a tiny TabTransformer trained one epoch on the Adult data."""
    from omegaconf import OmegaConf

    from lib import training
    from lib.artifact import save_artifact
    from lib.data import read_prepared
    from lib.features import FeatureEncoder
    from lib.tuning import LOG_SCALED_COLUMNS, encode_split

    prepared = read_prepared(prepared_run_dir)
    encoder = FeatureEncoder.fit(prepared.train, "drop", LOG_SCALED_COLUMNS)
    arrays = encode_split(prepared.train, encoder, "drop")
    hyperparameters = {
        **OmegaConf.to_container(small_settings.tf_keras.hyperparameters),
        **TINY_HYPERPARAMETERS,
    }
    model = training.build_and_compile(encoder, hyperparameters, seed=7)
    training.fit(model, arrays.encoded, arrays.labels, epochs=1, batch_size=512, seed=7)
    directory = tmp_path_factory.mktemp("artifact") / "model"
    save_artifact(
        directory, model, encoder, threshold=0.4, summary={"purpose": "tests"}
    )
    return directory
