"""Start the model server in its own process on loopback, and call it.

For the ``04_deployment`` notebook (local mode), tests and benchmarks::

    with start_local_server(run_dir / "model") as server:
        answer = server.invoke_csv(lines)        # lines of adult.test, no label
        answer.probabilities, answer.labels

The process is the same ``serve`` that runs in the container (``python -m
lib.serving``), configured through the same environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class LocalServerError(RuntimeError):
    """The local server did not start, stopped, or refused a request."""


@dataclass(frozen=True)
class ServerAnswer:
    """Predictions from the server, one per record in order."""

    probabilities: np.ndarray
    labels: list[str]


def find_free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start_local_server(
    model_dir: str | Path,
    port: int | None = None,
    *,
    workers: int = 1,
    threads: int | None = None,
    environment: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    startup_timeout: float = 180.0,
) -> LocalServer:
    """Start ``serve`` for ``model_dir`` on 127.0.0.1 and wait until ``/ping`` is 200.

    ``port`` None picks a free one. ``environment`` adds or overrides server
    variables (see lib/serving/settings.py). The server's log goes to ``log_path``
    (a temporary file by default). Raises LocalServerError, with the end of the
    log, when the server exits or is not ready within ``startup_timeout`` seconds.
    """
    port = find_free_port() if port is None else int(port)
    variables = {
        **os.environ,
        "SM_MODEL_DIR": str(Path(model_dir).resolve()),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MODEL_SERVER_HOST": LOOPBACK,
        "MODEL_SERVER_WORKERS": str(workers),
    }
    if threads is not None:
        variables["MODEL_SERVER_THREADS"] = str(threads)
    variables.update(environment or {})
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="model-server-")) / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lib.serving"],
            env=variables,
            cwd=_package_root(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LocalServer(process, port, log_path)
    try:
        server.wait_until_ready(startup_timeout)
    except BaseException:
        server.stop()
        raise
    logger.info("model server ready at %s (log: %s)", server.url, log_path)
    return server


class LocalServer:
    """Handle on a running local server: its URL, calls, and ``stop()``."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        import requests

        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://{LOOPBACK}:{port}"
        self._session = requests.Session()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def ping(self, timeout: float = 30.0) -> int:
        """The status code of ``GET /ping`` (0 when nothing answers in time).

        While a worker loads TensorFlow's libraries it cannot answer for a few
        seconds; after that it answers 503 until the model is warm.
        """
        import requests

        try:
            return self._session.get(f"{self.url}/ping", timeout=timeout).status_code
        except (requests.ConnectionError, requests.Timeout):
            return 0

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServerError(
                    f"the model server exited with status {self.process.returncode} "
                    f"before it was ready; its log ends with:\n{self.log_tail()}"
                )
            if self.ping() == 200:
                return
            time.sleep(0.2)
        raise LocalServerError(
            f"the model server at {self.url} was not ready after {timeout:.0f} s; "
            f"its log ends with:\n{self.log_tail()}"
        )

    def invoke(self, body: bytes | str, content_type: str, accept: str | None = None):
        """POST ``body`` to ``/invocations``; returns the ``requests.Response``."""
        headers = {"Content-Type": content_type}
        if accept is not None:
            headers["Accept"] = accept
        data = body.encode() if isinstance(body, str) else body
        return self._session.post(
            f"{self.url}/invocations", data=data, headers=headers, timeout=120
        )

    def invoke_csv(
        self, records: str | Iterable[Sequence], accept: str = "text/csv"
    ) -> ServerAnswer:
        """Score CSV: a ready body, or records as sequences of 14 values (or a polars
        frame of the 14 feature columns); None becomes ``?``."""
        if isinstance(records, str):
            body = records
        else:
            body = "".join(
                ",".join(_csv_value(value) for value in record) + "\n"
                for record in _rows(records, named=False)
            )
        return self._answer(self.invoke(body, "text/csv", accept))

    def invoke_json(
        self,
        records: Iterable[Mapping | Sequence],
        accept: str = "application/json",
    ) -> ServerAnswer:
        """Score records as JSON: dicts keyed by column, lists of 14 values, or a
        polars frame of the 14 feature columns."""
        instances = [_plain(record) for record in _rows(records, named=True)]
        body = json.dumps({"instances": instances})
        return self._answer(self.invoke(body, "application/json", accept))

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server gracefully (SIGTERM), forcefully after ``timeout``."""
        self._session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # The server leads its own process group: its workers go with it.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _answer(self, response) -> ServerAnswer:
        if response.status_code != 200:
            raise LocalServerError(
                f"the server answered {response.status_code}: {response.text[:500]}"
            )
        kind = response.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == "text/csv":
            rows = [line.split(",") for line in response.text.splitlines() if line]
            probabilities = np.array([float(row[0]) for row in rows])
            return ServerAnswer(probabilities, [row[1] for row in rows])
        predictions = response.json()["predictions"]
        return ServerAnswer(
            np.array([item["probability"] for item in predictions], dtype=np.float64),
            [item["label"] for item in predictions],
        )


def _rows(records, *, named: bool) -> Iterable:
    # A polars frame iterates over its columns; its rows are what is meant.
    if hasattr(records, "iter_rows"):
        return records.iter_rows(named=named)
    return records


def _csv_value(value) -> str:
    return "?" if value is None else str(_plain_value(value))


def _plain(record):
    # numpy scalars and tuples, e.g. from a data frame's rows, as JSON values.
    if isinstance(record, Mapping):
        return {key: _plain_value(value) for key, value in record.items()}
    return [_plain_value(value) for value in record]


def _plain_value(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _package_root() -> Path:
    # The folder that holds the lib package, so `python -m lib.serving` finds it
    # whatever the caller's working folder (papermill runs from notebooks/).
    return Path(__file__).resolve().parents[2]
