"""Serving speed, measured on loopback in one run: our server against a naive one.

For the same model artifact it measures

- the model alone, in this process: one record through ``predict_encoded``, and
  the test file in batches (the ceiling any server can reach on this machine);
- our server (``serve``: gunicorn, compiled prediction, vectorised parsing), once
  per worker class (gthread, sync):
  single-record latency (p50/p90/p99, one client, keep-alive connection) and
  batch throughput (the whole ``adult.test`` as one CSV request, 16,281 rows;
  one client, then one client per worker);
- a naive server, as the seed project served: Flask's development server, the
  body parsed with the ``csv`` module, ``model.predict`` called per request.

Figures go to benchmarks/results/serving.json and a markdown table to stdout.
Servers run one at a time so they do not compete for the cores.

    .venv/bin/python benchmarks/serving_benchmark.py --model-dir runs/<run>/model
"""

from __future__ import annotations

import argparse
import csv
import gzip
import http.client
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from recorded_paths import describe_path

from lib.serving.local import LocalServer, find_free_port, start_local_server

logger = logging.getLogger("serving_benchmark")

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = REPO_ROOT / "lib" / "data_files" / "adult.test.gz"
RESULTS_FILE = REPO_ROOT / "benchmarks" / "results" / "serving.json"
TARGETS = {"single_p50_ms": 2.0, "batch_rows_per_second": 50_000, "speedup": 40.0}


def read_test_lines() -> list[str]:
    """adult.test as published, each record without its label."""
    text = gzip.decompress(TEST_FILE.read_bytes()).decode()
    records = [line for line in text.splitlines()[1:] if line.strip()]
    return [line.rsplit(",", 1)[0] for line in records]


def newest_run_model() -> Path | None:
    candidates = sorted(REPO_ROOT.glob("runs/*/model/manifest.json"))
    return candidates[-1].parent if candidates else None


class Client:
    """One keep-alive HTTP connection; lower overhead than requests."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post_csv(self, body: bytes) -> bytes:
        self.connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": "text/csv"}
        )
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}: {payload[:300]!r}")
        return payload

    def close(self) -> None:
        self.connection.close()


def measure_single(port: int, lines: list[str], requests: int, warm_up: int) -> dict:
    client = Client(port)
    bodies = [line.encode() for line in lines[:1000]]
    for number in range(warm_up):
        client.post_csv(bodies[number % len(bodies)])
    latencies = []
    for number in range(requests):
        started = time.perf_counter()
        client.post_csv(bodies[number % len(bodies)])
        latencies.append(time.perf_counter() - started)
    client.close()
    milliseconds = np.array(latencies) * 1e3
    return {
        "requests": requests,
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
        "p90_ms": round(float(np.percentile(milliseconds, 90)), 3),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 3),
        "mean_ms": round(float(milliseconds.mean()), 3),
    }


def measure_batch(port: int, body: bytes, rows: int, requests: int, clients: int):
    def run(_: int) -> float:
        client = Client(port)
        client.post_csv(body)  # warm-up for this connection
        started = time.perf_counter()
        for _ in range(requests):
            client.post_csv(body)
        elapsed = time.perf_counter() - started
        client.close()
        return elapsed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        per_client = list(pool.map(run, range(clients)))
    wall = time.perf_counter() - started
    total_rows = rows * requests * clients
    return {
        "clients": clients,
        "requests_per_client": requests,
        "rows_per_request": rows,
        "rows_per_second": round(total_rows / max(per_client)),
        "seconds_per_request": round(statistics.mean(per_client) / requests, 4),
        "wall_seconds": round(wall, 2),
    }


def measure_model_alone(model_dir: Path, lines: list[str], repeats: int) -> dict:
    """The artifact in this process, no HTTP: the ceiling for any server."""
    from lib.artifact import load_artifact
    from lib.serving.model_slot import predict_probabilities
    from lib.serving.parsing import RecordSchema, parse_csv

    artifact = load_artifact(model_dir)
    schema = RecordSchema.from_artifact(artifact)
    one = parse_csv(lines[0].encode(), "utf-8", schema)
    encoded_one = artifact.encode(one.columns)
    for _ in range(50):
        artifact.predict_encoded(encoded_one)
    latencies = []
    for _ in range(500):
        started = time.perf_counter()
        artifact.predict_encoded(encoded_one)
        latencies.append(time.perf_counter() - started)
    body = ("\n".join(lines) + "\n").encode()
    parsed = parse_csv(body, "utf-8", schema)
    predict_probabilities(artifact, parsed, 4096)
    started = time.perf_counter()
    for _ in range(repeats):
        parse_csv(body, "utf-8", schema)
    parse_seconds = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        predict_probabilities(artifact, parsed, 4096)
    predict_seconds = (time.perf_counter() - started) / repeats
    return {
        "predict_one_p50_ms": round(float(np.median(latencies)) * 1e3, 3),
        "parse_csv_rows_per_second": round(parsed.count / parse_seconds),
        "encode_and_predict_rows_per_second": round(parsed.count / predict_seconds),
        "parameters": int(artifact.model.count_params()),
    }


def run_naive_server(model_dir: Path, port: int) -> None:
    """The baseline: Flask's own server and ``model.predict`` on every request."""
    from flask import Flask, Response, request

    from lib.artifact import load_artifact

    artifact = load_artifact(model_dir)
    columns = artifact.feature_columns
    numeric = [c for c in columns if c not in artifact.categorical_columns]
    app = Flask("naive")

    @app.get("/ping")
    def ping():
        return Response("", 200)

    @app.post("/invocations")
    def invocations():
        rows = [row for row in csv.reader(io.StringIO(request.get_data(as_text=True)))]
        values = {
            name: [row[position].strip() for row in rows if row]
            for position, name in enumerate(columns)
        }
        for name in numeric:
            values[name] = [float(value) for value in values[name]]
        encoded = artifact.encode(values)
        probabilities = artifact.model.predict(encoded, verbose=0).reshape(-1)
        answer = "\n".join(
            f"{p},{'>50K' if p >= artifact.threshold else '<=50K'}"
            for p in probabilities.tolist()
        )
        return Response(answer + "\n", 200, mimetype="text/csv")

    app.run(host="127.0.0.1", port=port, threaded=False)


def start_naive_server(model_dir: Path, log_path: Path) -> LocalServer:
    port = find_free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--naive-server",
                str(port),
                "--model-dir",
                str(model_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    server = LocalServer(process, port, log_path)
    server.wait_until_ready(300)
    return server


def server_environment(arguments, worker_class: str) -> dict[str, str]:
    variables = {"MODEL_SERVER_WORKER_CLASS": worker_class}
    if arguments.tf_threads is not None:
        variables["MODEL_SERVER_TF_THREADS"] = str(arguments.tf_threads)
    if arguments.batch_size is not None:
        variables["MODEL_SERVER_BATCH_SIZE"] = str(arguments.batch_size)
    return variables


def measure_ours(arguments, worker_class: str, lines, body, log_dir: Path) -> dict:
    logger.info("our server, %s workers: starting", worker_class)
    with start_local_server(
        arguments.model_dir,
        workers=arguments.workers,
        environment=server_environment(arguments, worker_class),
        log_path=log_dir / f"server-{worker_class}.log",
    ) as server:
        rows = len(lines)
        return {
            "worker_class": worker_class,
            "workers": arguments.workers,
            # The server's default: the cores shared out among the workers.
            "tf_threads": arguments.tf_threads
            or max(1, (os.cpu_count() or 1) // arguments.workers),
            "single": measure_single(
                server.port, lines, arguments.single_requests, warm_up=200
            ),
            "batch_one_client": measure_batch(
                server.port, body, rows, arguments.batch_requests, 1
            ),
            "batch_per_worker": measure_batch(
                server.port, body, rows, arguments.batch_requests, arguments.workers
            ),
        }


def best_batch_rate(measured: dict) -> int:
    return max(
        measured["batch_one_client"]["rows_per_second"],
        measured["batch_per_worker"]["rows_per_second"],
    )


def benchmark(arguments) -> dict:
    lines = read_test_lines()
    body = ("\n".join(lines) + "\n").encode()
    log_dir = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    results = {
        "machine": {
            "cpu_cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "model_dir": describe_path(arguments.model_dir),
        "test_rows": len(lines),
    }
    manifest = json.loads((arguments.model_dir / "manifest.json").read_text())
    results["hyperparameters"] = manifest.get("summary", {}).get("hyperparameters")
    results["ours"] = {
        worker_class: measure_ours(arguments, worker_class, lines, body, log_dir)
        for worker_class in arguments.worker_classes
    }
    logger.info("naive server: starting")
    with start_naive_server(arguments.model_dir, log_dir / "naive.log") as server:
        results["naive"] = {
            "single": measure_single(
                server.port, lines, arguments.naive_requests, warm_up=10
            ),
            "batch_one_client": measure_batch(server.port, body, len(lines), 2, 1),
        }
    logger.info("model alone, in this process")
    results["model_alone"] = measure_model_alone(arguments.model_dir, lines, 5)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    naive = results["naive"]
    comparison = {}
    for worker_class, measured in results["ours"].items():
        p50 = measured["single"]["p50_ms"]
        comparison[worker_class] = {
            "single_p50_speedup": round(naive["single"]["p50_ms"] / p50, 1),
            "batch_speedup": round(
                best_batch_rate(measured)
                / naive["batch_one_client"]["rows_per_second"],
                1,
            ),
            "single_p50_ms<=2": p50 <= TARGETS["single_p50_ms"],
            "batch_rows_per_second>=50000": best_batch_rate(measured)
            >= TARGETS["batch_rows_per_second"],
            "single_speedup>=40": naive["single"]["p50_ms"] / p50 >= TARGETS["speedup"],
        }
    results["comparison"] = comparison
    return results


def markdown_table(results: dict) -> str:
    ours, naive, alone = results["ours"], results["naive"], results["model_alone"]
    classes = list(ours)
    header = " | ".join(f"ours ({name})" for name in classes)
    lines = [
        f"| measure | {header} | naive (model.predict) |",
        "| --- |" + " ---: |" * (len(classes) + 1),
    ]

    def row(name, values, naive_value):
        lines.append(f"| {name} | {' | '.join(map(str, values))} | {naive_value} |")

    row(
        "single record p50 (ms)",
        [ours[c]["single"]["p50_ms"] for c in classes],
        naive["single"]["p50_ms"],
    )
    row(
        "single record p99 (ms)",
        [ours[c]["single"]["p99_ms"] for c in classes],
        naive["single"]["p99_ms"],
    )
    row(
        "batch CSV, 1 client (rows/s)",
        [f"{ours[c]['batch_one_client']['rows_per_second']:,}" for c in classes],
        f"{naive['batch_one_client']['rows_per_second']:,}",
    )
    workers = ours[classes[0]]["workers"]
    row(
        f"batch CSV, {workers} clients (rows/s)",
        [f"{ours[c]['batch_per_worker']['rows_per_second']:,}" for c in classes],
        "-",
    )
    row(
        "single-record speed-up over naive",
        [f"{results['comparison'][c]['single_p50_speedup']}x" for c in classes],
        "1x",
    )
    lines += [
        "",
        f"Model alone, in-process: one record {alone['predict_one_p50_ms']} ms "
        f"(p50); {alone['encode_and_predict_rows_per_second']:,} rows/s encoded "
        f"and predicted; CSV parsing {alone['parse_csv_rows_per_second']:,} rows/s. "
        f"{alone['parameters']:,} parameters; {workers} workers; "
        f"{results['machine']['cpu_cores']} cores, load average "
        f"{results['machine']['load_average_at_start']} at start, "
        f"{results['load_average_at_end']} at end.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--tf-threads", type=int, default=None, help="TensorFlow threads per worker"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="rows per model call"
    )
    parser.add_argument(
        "--worker-classes",
        nargs="+",
        default=["gthread", "sync"],
        choices=["gthread", "sync"],
        help="gunicorn worker classes to measure, one server each",
    )
    parser.add_argument("--single-requests", type=int, default=2000)
    parser.add_argument("--batch-requests", type=int, default=5)
    parser.add_argument("--naive-requests", type=int, default=100)
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    parser.add_argument(
        "--naive-server", type=int, default=None, help=argparse.SUPPRESS
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    arguments.model_dir = arguments.model_dir or newest_run_model()
    if arguments.model_dir is None or not arguments.model_dir.is_dir():
        parser.error(
            "no model artifact: pass --model-dir, or run the main job (make run) "
            "so that runs/<run>/model exists"
        )
    if arguments.naive_server is not None:
        run_naive_server(arguments.model_dir, arguments.naive_server)
        return 0
    results = benchmark(arguments)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nFigures written to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
