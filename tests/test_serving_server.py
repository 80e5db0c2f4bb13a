"""The real ``serve`` (docker/serve) in its own process on a free loopback port.

Checks the SageMaker contract end to end: /ping before and after the model is
ready, both body types, content negotiation, every refusal, predictions equal to
the offline ones, concurrency, and start-up failures.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from lib.serving.local import find_free_port, start_local_server

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE = REPO_ROOT / "docker" / "serve"
TEST_FILE = REPO_ROOT / "lib" / "data_files" / "adult.test.gz"
READY_LINE = "model loaded and warmed up"
SIX_MB = 6 * 1024 * 1024


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    log_path: Path
    ping_history: list[int]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch_serve(model_dir, log_path: Path, **environment: str):
    """Start docker/serve with the test's Python; returns the process and its URL."""
    port = find_free_port()
    variables = {
        **os.environ,
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MODEL_SERVER_HOST": "127.0.0.1",
        "MODEL_SERVER_WORKERS": "1",
        **environment,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(SERVE)],
            env=variables,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, f"http://127.0.0.1:{port}"


def ping_status(url: str) -> int:
    # Generous: while a worker loads TensorFlow's libraries it cannot answer at all.
    try:
        return requests.get(f"{url}/ping", timeout=60).status_code
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        # No answer, or one cut off by a server that is exiting (a broken artifact
        # stops the whole server, whatever its workers were writing).
        return 0


def wait_for_ready(served: Served, workers: int = 1, timeout: float = 240.0) -> None:
    """Poll /ping until every worker is ready.

    Each 200 must come after a worker logged that its model is loaded and warm,
    or the server said yes too early. Readiness is per worker: one still loading
    answers 503 while another already answers 200.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(
                f"serve exited with {served.process.returncode}:\n{served.log()}"
            )
        status = ping_status(served.url)
        served.ping_history.append(status)
        ready_workers = served.log().count(READY_LINE)
        if status == 200:
            assert ready_workers >= 1, "/ping said 200 before any warm-up passed"
            if ready_workers >= workers:
                return
        time.sleep(0.05)
    pytest.fail(f"serve was not ready within {timeout} s:\n{served.log()}")


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


@pytest.fixture(scope="module")
def served(trained_artifact_dir, tmp_path_factory):
    """serve with two workers, the default body limit, ready for requests."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    process, url = launch_serve(
        trained_artifact_dir, log_path, MODEL_SERVER_WORKERS="2"
    )
    running = Served(process, url, log_path, [])
    try:
        wait_for_ready(running, workers=2)
        yield running
    finally:
        stop(process)


@pytest.fixture(scope="module")
def artifact(trained_artifact_dir):
    from lib.artifact import load_artifact

    return load_artifact(trained_artifact_dir)


@pytest.fixture(scope="module")
def test_file():
    """adult.test as published: raw feature lines, and the offline frame."""
    from lib.data import parse_adult

    content = gzip.decompress(TEST_FILE.read_bytes())
    frame, _ = parse_adult(content, "adult.test")
    lines = [line for line in content.decode().splitlines()[1:] if line.strip()]
    feature_lines = [line.rsplit(",", 1)[0] for line in lines]
    return feature_lines, frame


@pytest.fixture(scope="module")
def offline(artifact, test_file):
    """Offline probabilities of every test record, from the artifact itself."""
    return artifact.predict_frame(test_file[1])


def post(url, body, content_type="text/csv", accept=None, **kwargs):
    headers = {"Content-Type": content_type} if content_type else {}
    if accept is not None:
        headers["Accept"] = accept
    data = body.encode() if isinstance(body, str) else body
    return requests.post(
        f"{url}/invocations", data=data, headers=headers, timeout=120, **kwargs
    )


def labels_for(probabilities, threshold) -> list[str]:
    return [">50K" if p >= threshold else "<=50K" for p in probabilities]


def json_records(frame, rows=None) -> list[dict]:
    from lib.data import FEATURE_COLUMNS

    selected = frame.select(FEATURE_COLUMNS)
    if rows is not None:
        selected = selected[rows]
    return selected.to_dicts()


# --- the contract, answered correctly ---------------------------------------------


def test_ping_answers_503_until_the_model_is_loaded_then_200(served):
    statuses = [status for status in served.ping_history if status]
    assert statuses[0] == 503, served.ping_history
    assert statuses[-1] == 200
    assert ping_status(served.url) == 200


def test_ping_body_is_json(served):
    answer = requests.get(f"{served.url}/ping", timeout=5)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {"status": "ready"}


def test_whole_test_file_as_csv_equals_offline_predictions(
    served, test_file, offline, artifact
):
    lines, _ = test_file
    answer = post(served.url, "\n".join(lines) + "\n", accept="text/csv")
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"].startswith("text/csv")
    rows = [line.split(",") for line in answer.text.splitlines()]
    assert len(rows) == len(offline) == 16_281
    probabilities = np.array([float(row[0]) for row in rows])
    np.testing.assert_allclose(probabilities, offline, rtol=0, atol=1e-6)
    assert [row[1] for row in rows] == labels_for(probabilities, artifact.threshold)


def test_whole_test_file_as_json_records_equals_offline_predictions(
    served, test_file, offline, artifact
):
    answer = post(
        served.url, json.dumps(json_records(test_file[1])), "application/json"
    )
    assert answer.status_code == 200, answer.text[:300]
    predictions = answer.json()["predictions"]
    probabilities = np.array([item["probability"] for item in predictions])
    np.testing.assert_allclose(probabilities, offline, rtol=0, atol=1e-6)
    assert [item["label"] for item in predictions] == labels_for(
        probabilities, artifact.threshold
    )


def test_json_instances_of_records_and_of_value_lists(served, test_file, offline):
    records = json_records(test_file[1], slice(0, 300))
    for instances in (records, [list(record.values()) for record in records]):
        answer = post(
            served.url, json.dumps({"instances": instances}), "application/json"
        )
        assert answer.status_code == 200, answer.text[:300]
        got = [item["probability"] for item in answer.json()["predictions"]]
        np.testing.assert_allclose(got, offline[:300], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "layout",
    ["crlf", "no-spaces", "blank-lines", "trailing-newline", "no-final-newline"],
)
def test_csv_layouts_give_the_same_predictions(served, test_file, offline, layout):
    lines = test_file[0][:50]
    body = {
        "crlf": "\r\n".join(lines) + "\r\n",
        "no-spaces": "\n".join(line.replace(", ", ",") for line in lines),
        "blank-lines": "\n\n" + "\n\n  \n".join(lines) + "\n\n\n",
        "trailing-newline": "\n".join(lines) + "\n",
        "no-final-newline": "\n".join(lines),
    }[layout]
    answer = post(served.url, body, accept="text/csv")
    assert answer.status_code == 200, answer.text[:300]
    got = [float(line.split(",")[0]) for line in answer.text.splitlines()]
    np.testing.assert_allclose(got, offline[:50], rtol=0, atol=1e-6)


def test_missing_values_and_unseen_categories_are_scored_like_offline(served, artifact):
    from lib.data import FEATURE_COLUMNS

    line = (
        "52, ?, 209642, Doctorate, 16, Married-civ-spouse, ?, Husband, White, Male,"
        " 15024, 0, 45, Atlantis"
    )
    values = [value.strip() for value in line.split(",")]
    numeric = [
        name for name in FEATURE_COLUMNS if name not in artifact.categorical_columns
    ]
    record = dict(zip(FEATURE_COLUMNS, values, strict=True))
    record.update({name: int(record[name]) for name in numeric})
    expected = artifact.predict_proba(
        {name: [value] for name, value in record.items()}
    )[0]
    answer = post(served.url, line)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["probability"] == pytest.approx(
        expected, abs=1e-6
    )
    record.update(workclass=None, occupation=None)
    answer = post(served.url, json.dumps([record]), "application/json")
    assert answer.json()["predictions"][0]["probability"] == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize(
    ("content_type", "body_kind"),
    [
        ("Text/CSV; charset=utf-8", "csv"),
        ("text/csv;charset=UTF-8", "csv"),
        ("TEXT/csv", "csv"),
        ("Application/JSON; charset=utf-8", "json"),
        ("application/json;foo=bar", "json"),
    ],
)
def test_content_types_match_ignoring_case_and_parameters(
    served, test_file, offline, content_type, body_kind
):
    lines, frame = test_file
    body = (
        "\n".join(lines[:5])
        if body_kind == "csv"
        else json.dumps(json_records(frame, slice(0, 5)))
    )
    answer = post(served.url, body, content_type)
    assert answer.status_code == 200, answer.text
    got = [item["probability"] for item in answer.json()["predictions"]]
    np.testing.assert_allclose(got, offline[:5], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("accept", "answer_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/csv", "text/csv"),
        ("Text/CSV; charset=utf-8", "text/csv"),
        ("text/*", "text/csv"),
        ("application/json;q=0.4, text/csv;q=0.8", "text/csv"),
    ],
)
def test_answer_type_follows_accept(served, test_file, offline, accept, answer_type):
    answer = post(served.url, "\n".join(test_file[0][:3]), accept=accept)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].split(";")[0] == answer_type
    if answer_type == "text/csv":
        got = [float(line.split(",")[0]) for line in answer.text.splitlines()]
    else:
        got = [item["probability"] for item in answer.json()["predictions"]]
    np.testing.assert_allclose(got, offline[:3], rtol=0, atol=1e-6)


# --- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    ],
)
def test_unsupported_content_type_is_415_listing_the_supported(
    served, test_file, content_type
):
    answer = post(served.url, test_file[0][0], content_type)
    assert answer.status_code == 415
    message = answer.json()["error"]
    assert "text/csv" in message and "application/json" in message


@pytest.mark.parametrize(
    "accept", ["application/xml", "text/html, image/png", "text/csv;q=0"]
)
def test_unsupported_accept_is_406_as_json(served, test_file, accept):
    answer = post(served.url, test_file[0][0], accept=accept)
    assert answer.status_code == 406
    assert answer.headers["Content-Type"].startswith("application/json")
    assert "text/csv" in answer.json()["error"]


def test_body_over_the_default_limit_is_413(served):
    answer = post(served.url, b"1" * (SIX_MB + 1))
    assert answer.status_code == 413
    assert str(SIX_MB) in answer.json()["error"]
    assert ping_status(served.url) == 200


def test_chunked_body_over_the_limit_is_413(served):
    def chunks():
        block = b"9" * 65536
        for _ in range(SIX_MB // len(block) + 2):
            yield block

    answer = post(served.url, chunks())
    assert answer.status_code == 413


@pytest.mark.slow
def test_body_of_exactly_the_limit_is_accepted(served, test_file, offline):
    line = test_file[0][0] + "\n"
    body = line + "\n" * (SIX_MB - len(line))
    assert len(body.encode()) == SIX_MB
    answer = post(served.url, body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["predictions"][0]["probability"] == pytest.approx(
        offline[0], abs=1e-6
    )


def make_csv_cases(lines: list[str]) -> dict:
    first, second = lines[0], lines[1]
    return {
        "13 fields": (f"{first}\n{second.rsplit(',', 1)[0]}", 1, "native_country"),
        "16 fields": (f"{first}, 1, 2", 0, "native_country"),
        "header line": (
            "age,workclass,fnlwgt,education,education-num,marital-status,occupation,"
            "relationship,race,sex,capital-gain,capital-loss,hours-per-week,"
            f"native-country\n{first}",
            0,
            "age",
        ),
        "label column": (f"{first}\n\n{second}, >50K.", 1, "income"),
        "non-numeric": (f"{first}\n{second.replace('38', 'old', 1)}", 1, "age"),
        "non-finite": (first.replace(" 40,", " inf,"), 0, "hours_per_week"),
        "too large": (first.replace("226802", "1e300"), 0, "fnlwgt"),
        "empty body": ("", None, None),
        "only blank lines": ("\r\n\r\n  \n", None, None),
    }


@pytest.mark.parametrize(
    "case",
    [
        "13 fields",
        "16 fields",
        "header line",
        "label column",
        "non-numeric",
        "non-finite",
        "too large",
        "empty body",
        "only blank lines",
    ],
)
def test_bad_csv_is_400_naming_record_and_field(served, test_file, case):
    body, record, field = make_csv_cases(test_file[0])[case]
    answer = post(served.url, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error"]
    assert (error["record"], error["field"]) == (record, field)


@pytest.mark.parametrize(
    ("mutation", "record", "field"),
    [
        ({"income": ">50K"}, 1, "income"),
        ({"age": "forty"}, 1, "age"),
        ({"capital_gain": None}, 1, "capital_gain"),
        ({"sex": 1}, 1, "sex"),
    ],
)
def test_bad_json_is_400_naming_record_and_field(
    served, test_file, mutation, record, field
):
    records = json_records(test_file[1], slice(0, 2))
    records[1].update(mutation)
    answer = post(served.url, json.dumps(records), "application/json")
    assert answer.status_code == 400
    error = answer.json()
    assert (error["record"], error["field"]) == (record, field)


@pytest.mark.parametrize(
    "body", [b"", b"[]", b"{}", b"[NaN]", b'{"instances": "all"}', b"[[[[", b"\xff"]
)
def test_bad_json_documents_are_400_with_a_message(served, body):
    answer = post(served.url, body, "application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]


def test_wrong_method_and_unknown_path_answer_json(served):
    answer = requests.get(f"{served.url}/invocations", timeout=5)
    assert answer.status_code == 405
    assert answer.json()["error"]
    answer = requests.post(f"{served.url}/predict", data=b"x", timeout=5)
    assert answer.status_code == 404
    assert answer.json()["error"]


HOSTILE_BODIES = [
    ("text/csv; charset=rot-13", b"1,2"),
    ("text/csv; charset=base64", b"MSwy"),
    ("text/csv; charset=undefined", b"1,2"),
    ("text/csv; charset=utf-16", b"\x00" * 101),
    ("application/json; charset=idna", b"xn--" * 50),
    ("text/csv", bytes(range(256)) * 40),
    ("text/csv", b"," * 100_000),
    ("text/csv", b"\x00" * 1000),
    ("text/csv", ("1e308," * 13 + "1e308\n").encode()),
    ("text/csv", "\u202e\u0000\ufeff".encode() * 100),
    ("application/json", b"[" * 200_000),
    ("application/json", b'{"instances": [' + b"[]," * 100_000 + b"[]]}"),
    ("application/json", b"[" + b"9" * 100_000 + b"]"),
    ("application/json", json.dumps([{"age": {"deep": [1, 2]}}]).encode()),
    ("application/json", json.dumps([[1e308] * 14]).encode()),
    ("application/json", b'"\\ud800"'),
]


def worker_pids(master_pid: int) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(master_pid).children()}


def test_hostile_bodies_get_4xx_and_no_worker_dies(served):
    before = worker_pids(served.process.pid)
    assert len(before) == 2
    for content_type, body in HOSTILE_BODIES:
        answer = post(served.url, body, content_type)
        assert 400 <= answer.status_code < 500, (body[:40], answer.status_code)
        assert answer.json()["error"], body[:40]
    assert worker_pids(served.process.pid) == before
    assert ping_status(served.url) == 200
    assert "Traceback" not in served.log()


def raw_exchange(url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send bytes as they are; return the answer's head and body."""
    import socket

    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        reply = b""
        while block := connection.recv(65536):
            reply += block
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Type: text/csv\r\nContent-Length: abc\r\n",
        b"Content-Type: text/csv\x01\r\nContent-Length: 3\r\n",
        b"Content-Type: text/csv\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Type: text/csv\r\nTransfer-Encoding: gzip\r\n",
        b"Content-Type: text/csv\r\nX-Padding: " + b"a" * 9000 + b"\r\n",
    ],
    ids=[
        "bad-length",
        "control-character",
        "length-and-chunked",
        "gzip",
        "huge-header",
    ],
)
def test_http_that_gunicorn_refuses_is_answered_4xx_as_json(served, headers):
    head, body = raw_exchange(
        served.url,
        b"POST /invocations HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\nabc",
    )
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, head
    assert b"application/json" in head
    assert json.loads(body)["error"]


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX\r\n0\r\n\r\n", b"5\r\nab"],
    ids=["bad-size", "missing-terminator", "cut-short"],
)
def test_malformed_chunked_bodies_are_400_as_json(served, chunks):
    head, body = raw_exchange(
        served.url,
        b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body)["error"]
    assert ping_status(served.url) == 200


@pytest.mark.parametrize("value", ["3.4e38", "-3.4e38", "1e-300", "-0"])
def test_extreme_but_valid_numbers_get_a_probability(served, test_file, value):
    line = test_file[0][0].replace(" 40,", f" {value},")
    answer = post(served.url, line)
    assert answer.status_code == 200, answer.text
    probability = answer.json()["predictions"][0]["probability"]
    assert 0.0 <= probability <= 1.0


# --- concurrency and process model --------------------------------------------------


def test_concurrent_clients_each_get_their_own_answers(served, test_file, offline):
    lines, frame = test_file
    records = json_records(frame, slice(0, 400))

    def client(number: int) -> int:
        checked = 0
        with requests.Session() as session:
            for step in range(12):
                start = (number * 37 + step * 11) % 350
                size = 1 + (number + step) % 40
                if (number + step) % 2:
                    body = "\n".join(lines[start : start + size])
                    headers = {"Content-Type": "text/csv"}
                else:
                    body = json.dumps(records[start : start + size])
                    headers = {"Content-Type": "application/json"}
                answer = session.post(
                    f"{served.url}/invocations", data=body, headers=headers, timeout=60
                )
                assert answer.status_code == 200, answer.text[:200]
                got = [item["probability"] for item in answer.json()["predictions"]]
                np.testing.assert_allclose(
                    got, offline[start : start + size], rtol=0, atol=1e-6
                )
                checked += size
        return checked

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(client, range(8)))
    assert sum(counts) == sum(1 + (n + s) % 40 for n in range(8) for s in range(12))


def test_master_never_loads_tensorflow_but_workers_do(served):
    def maps(pid: int) -> str:
        return Path(f"/proc/{pid}/maps").read_text()

    assert "tensorflow" not in maps(served.process.pid)
    workers = worker_pids(served.process.pid)
    assert workers and all("tensorflow" in maps(pid) for pid in workers)


def test_execution_parameters_for_batch_transform(served):
    answer = requests.get(f"{served.url}/execution-parameters", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["MaxPayloadInMB"] == 6
    assert answer.json()["BatchStrategy"] == "MULTI_RECORD"


# --- start-up and shutdown ------------------------------------------------------------


def test_missing_model_folder_exits_non_zero_with_a_message(tmp_path):
    missing = tmp_path / "no-model-here"
    process, url = launch_serve(missing, tmp_path / "serve.log")
    assert process.wait(60) != 0
    log = (tmp_path / "serve.log").read_text()
    assert str(missing) in log and "does not exist" in log
    assert ping_status(url) == 0


def test_bad_setting_exits_non_zero_naming_the_variable(tmp_path, trained_artifact_dir):
    process, _ = launch_serve(
        trained_artifact_dir, tmp_path / "serve.log", MODEL_SERVER_WORKERS="many"
    )
    assert process.wait(60) == 2
    assert "MODEL_SERVER_WORKERS" in (tmp_path / "serve.log").read_text()


def test_unexpected_argument_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SERVE), "train"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "usage: serve" in result.stderr


def copy_artifact(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def run_until_exit(model_dir: Path, log_path: Path, timeout: float = 240.0):
    """Run serve on a broken artifact; /ping must never be 200 while it lives."""
    process, url = launch_serve(model_dir, log_path, MODEL_SERVER_WORKERS="2")
    statuses = []
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            statuses.append(ping_status(url))
            time.sleep(0.1)
    finally:
        returncode = stop(process) if process.poll() is None else process.returncode
    assert time.monotonic() < deadline, "serve kept running on a broken artifact"
    return returncode, statuses, log_path.read_text(errors="replace")


@pytest.mark.slow
def test_corrupt_artifact_exits_non_zero_and_never_pings_200(
    trained_artifact_dir, tmp_path
):
    model_dir = copy_artifact(trained_artifact_dir, tmp_path / "model")
    with open(model_dir / "model.keras", "r+b") as model_file:
        model_file.seek(100)
        model_file.write(b"corrupted")
    returncode, statuses, log = run_until_exit(model_dir, tmp_path / "serve.log")
    assert returncode != 0
    assert 200 not in statuses
    assert "checksum mismatch" in log and "cannot serve the model" in log


@pytest.mark.slow
def test_mismatched_artifact_exits_non_zero(trained_artifact_dir, tmp_path):
    model_dir = copy_artifact(trained_artifact_dir, tmp_path / "model")
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["feature_columns"] = manifest["feature_columns"][::-1]
    manifest_path.write_text(json.dumps(manifest))
    returncode, statuses, log = run_until_exit(model_dir, tmp_path / "serve.log")
    assert returncode != 0
    assert 200 not in statuses
    assert "disagree on the feature columns" in log


@pytest.mark.slow
def test_requests_during_loading_get_503_and_sigterm_exits_cleanly(
    trained_artifact_dir, tmp_path, test_file
):
    process, url = launch_serve(
        trained_artifact_dir, tmp_path / "serve.log", MODEL_SERVER_READY_WAIT="0"
    )
    served = Served(process, url, tmp_path / "serve.log", [])
    try:
        while ping_status(url) == 0:
            assert process.poll() is None, served.log()
            time.sleep(0.05)
        early = post(url, test_file[0][0])
        assert early.status_code == 503, "the model loaded before the first request"
        assert "loading" in early.json()["error"]
        wait_for_ready(served)
        assert post(url, test_file[0][0]).status_code == 200
    finally:
        returncode = stop(process)
    assert returncode == 0, served.log()


@pytest.mark.slow
def test_local_server_handle_for_the_notebook(trained_artifact_dir, test_file, offline):
    lines, frame = test_file
    from lib.data import FEATURE_COLUMNS

    with start_local_server(trained_artifact_dir, workers=1) as server:
        assert server.ping() == 200
        from_csv = server.invoke_csv("\n".join(lines[:100]))
        from_json = server.invoke_json(frame.select(FEATURE_COLUMNS)[:100])
        from_rows = server.invoke_csv(frame.select(FEATURE_COLUMNS)[:100])
    assert server.process.returncode == 0
    for answer in (from_csv, from_json, from_rows):
        np.testing.assert_allclose(answer.probabilities, offline[:100], atol=1e-6)
        assert len(answer.labels) == 100
