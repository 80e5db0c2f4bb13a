"""Training speed of our TabTransformer beside a naive one of the same size, one run.

    .venv/bin/python benchmarks/training_throughput.py [--epochs 3]

Five variants train on the real Adult training split with the same batch size:

- ``ours_none``: lib.training's model and input pipeline with
  ``numeric_embedding: none`` (numerics joined after the transformer, as the naive
  model does): the like-for-like comparison;
- ``ours_none_xla``: the same with an XLA-compiled train step
  (``tf_keras.jit_compile: true``);
- ``ours_default`` and ``ours_default_xla``: the same two with the YAML default
  hyperparameters (numeric columns as tokens too, so attention runs over more
  tokens);
- ``naive``: benchmarks/naive_tabtransformer.py, string lookups in the model, one
  input per column, full-width attention keys.

Each variant runs in its own process, so its peak memory (``ru_maxrss``) is its
own. The processes start together and load data and build their models; then this
process lets exactly one of them train one epoch at a time, so they never compete
for the cores: first each one's tracing epoch (reported apart), then ``--epochs``
timed rounds with the order rotated every round, which spreads the noise of a shared
machine evenly. Wall-clock and CPU seconds are both recorded per epoch; the ratio
uses the median epoch. Figures go to benchmarks/results/training_throughput.json
and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "training_throughput.json"
VARIANTS = ("ours_none", "ours_none_xla", "ours_default", "ours_default_xla", "naive")
BASELINE = "naive"
LIKE_FOR_LIKE = ("ours_none", "ours_none_xla")
TARGET_SPEEDUP = 5.0
# Ratios of the naive model's epoch time to ours; "wall" (the median) is the headline.
SPEEDUP_MEASURES = {
    "wall": "median_epoch_seconds",
    "wall_best_epoch": "min_epoch_seconds",
    "cpu": "median_epoch_cpu_seconds",
}
# Lines of the worker protocol start with this; anything else on stdout is noise.
MESSAGE_PREFIX = "BENCH "

logger = logging.getLogger("training_throughput")


# ---------------------------------------------------------------- worker process


def send(message: dict) -> None:
    sys.stdout.write(MESSAGE_PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_epoch_gate():
    import keras

    class EpochGate(keras.callbacks.Callback):
        """Waits for the parent's ``go`` before each epoch, then times it."""

        def on_epoch_begin(self, epoch, logs=None):
            send({"event": "ready", "epoch": epoch})
            command = sys.stdin.readline().strip()
            if command != "go":
                raise RuntimeError(f"expected 'go' from the parent, got {command!r}")
            self._wall_started = time.perf_counter()
            self._cpu_started = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            send(
                {
                    "event": "epoch",
                    "epoch": epoch,
                    "seconds": time.perf_counter() - self._wall_started,
                    "cpu_seconds": time.process_time() - self._cpu_started,
                    "loss": float(logs["loss"]),
                }
            )

    return EpochGate()


def run_worker(variant: str, data_dir: Path, epochs: int, batch_size: int) -> None:
    """Train one variant for 1 + ``epochs`` epochs, paced by the parent."""
    import keras
    from naive_tabtransformer import (
        build_naive_tabtransformer,
        compile_naive,
        make_naive_dataset,
        raw_columns,
        vocabularies_of,
    )
    from omegaconf import OmegaConf

    from lib import training
    from lib.config import load_settings
    from lib.data import LABEL_COLUMN, read_prepared
    from lib.features import FeatureEncoder
    from lib.tuning import LOG_SCALED_COLUMNS

    settings = load_settings([])
    train = read_prepared(data_dir).train
    labels = train[LABEL_COLUMN].to_numpy()
    hyperparameters = OmegaConf.to_container(settings.tf_keras.hyperparameters)
    if variant.startswith("ours_none"):
        hyperparameters["numeric_embedding"] = "none"
    encoder = FeatureEncoder.fit(train, settings.data.fnlwgt, LOG_SCALED_COLUMNS)
    rss_before_model = peak_rss_mb()
    total_epochs = 1 + epochs
    started = time.perf_counter()
    if variant == BASELINE:
        columns = raw_columns(
            train, encoder.categorical_columns, encoder.numeric_columns
        )
        vocabularies = vocabularies_of(train, encoder.categorical_columns)
        preparation_seconds = time.perf_counter() - started
        keras.utils.set_random_seed(settings.seed)
        model = build_naive_tabtransformer(
            vocabularies, encoder.numeric_columns, **hyperparameters
        )
        compile_naive(model, hyperparameters)
        dataset = make_naive_dataset(
            columns, labels, batch_size=batch_size, shuffle=True, seed=settings.seed
        )
        model.fit(
            dataset, epochs=total_epochs, callbacks=[make_epoch_gate()], verbose=0
        )
    else:
        # Our pipeline encodes once, before training; that cost is reported apart.
        encoded = encoder.encode_frame(train)
        preparation_seconds = time.perf_counter() - started
        model = training.build_and_compile(
            encoder,
            hyperparameters,
            settings.seed,
            n_rows=len(labels),
            batch_size=batch_size,
            schedule_epochs=total_epochs,
            jit_compile=variant.endswith("_xla"),
        )
        training.fit(
            model,
            encoded,
            labels,
            epochs=total_epochs,
            batch_size=batch_size,
            seed=settings.seed,
            balance_classes=hyperparameters["balance_classes"],
            callbacks=[make_epoch_gate()],
        )
    send(
        {
            "event": "done",
            "rows": len(labels),
            "parameters": model.count_params(),
            "preparation_seconds": round(preparation_seconds, 3),
            "peak_rss_before_model_mb": rss_before_model,
            "peak_rss_mb": peak_rss_mb(),
            "jit_compile": bool(model.jit_compile),
            "hyperparameters": hyperparameters,
        }
    )


# ---------------------------------------------------------------- parent process


class Worker:
    """One variant's process and the protocol to pace it."""

    def __init__(self, variant: str, data_dir: Path, log_dir: Path, arguments):
        self.variant = variant
        self.log_path = log_dir / f"{variant}.log"
        self.log_file = self.log_path.open("w")
        # The message that followed the last epoch: "ready", or "done" with figures.
        self.after: dict | None = None
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            variant,
            "--data-dir",
            str(data_dir),
            "--epochs",
            str(arguments.epochs),
            "--batch-size",
            str(arguments.batch_size),
        ]
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
            bufsize=1,
            env=environment,
            cwd=REPO_ROOT,
        )

    def expect(self, event: str) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait()
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(
                    f"worker {self.variant} exited with code {self.process.returncode} "
                    f"while {event!r} was expected; end of its log:\n{tail}"
                )
            if line.startswith(MESSAGE_PREFIX):
                message = json.loads(line[len(MESSAGE_PREFIX) :])
                if message["event"] != event:
                    raise RuntimeError(
                        f"worker {self.variant} sent {message['event']!r}, "
                        f"expected {event!r}"
                    )
                return message

    def train_one_epoch(self, is_last: bool) -> dict:
        """Let it train one epoch; return when it is idle again."""
        busy_before = machine_busy_cpu_seconds()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        figures = self.expect("epoch")
        busy = machine_busy_cpu_seconds() - busy_before
        # What the rest of the machine used meanwhile: the noise behind a slow epoch.
        figures["other_processes_cpu_seconds"] = max(0.0, busy - figures["cpu_seconds"])
        self.after = self.expect("done" if is_last else "ready")
        return figures

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.log_file.close()


def machine_busy_cpu_seconds() -> float:
    """CPU time used by every process on the machine so far (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


def machine_description() -> dict:
    model_name = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": model_name,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def summarise_variant(epochs: list[dict], first: dict, done: dict) -> dict:
    seconds = [e["seconds"] for e in epochs]
    cpu_seconds = [e["cpu_seconds"] for e in epochs]
    median_seconds = statistics.median(seconds)
    median_cpu = statistics.median(cpu_seconds)
    rows = done["rows"]
    return {
        "first_epoch_seconds": round(first["seconds"], 2),
        "first_epoch_loss": round(first["loss"], 4),
        "epoch_seconds": [round(s, 2) for s in seconds],
        "epoch_cpu_seconds": [round(s, 2) for s in cpu_seconds],
        "epoch_losses": [round(e["loss"], 4) for e in epochs],
        "epoch_other_processes_cpu_seconds": [
            round(e["other_processes_cpu_seconds"], 1) for e in epochs
        ],
        "median_epoch_seconds": round(median_seconds, 2),
        "min_epoch_seconds": round(min(seconds), 2),
        "max_epoch_seconds": round(max(seconds), 2),
        "rows_per_second": round(rows / median_seconds),
        "rows_per_second_best_epoch": round(rows / min(seconds)),
        # Well below 1 (about a core's worth) the epoch waited for the CPU: other load.
        "epoch_cpu_share": [
            round(c / w, 2) for c, w in zip(cpu_seconds, seconds, strict=True)
        ],
        "median_epoch_cpu_seconds": round(median_cpu, 2),
        "rows_per_cpu_second": round(rows / median_cpu),
        **{k: v for k, v in done.items() if k not in ("event", "hyperparameters")},
    }


def run_benchmark(arguments) -> dict:
    import keras
    import tensorflow as tf

    from lib.config import load_settings
    from lib.data import prepare_data

    load_at_start = os.getloadavg()
    settings = load_settings([])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="training-throughput-") as scratch:
        scratch = Path(scratch)
        prepare_data(settings, scratch)
        workers = {v: Worker(v, scratch, scratch, arguments) for v in VARIANTS}
        try:
            for worker in workers.values():
                worker.expect("ready")
            logger.info("All variants loaded; first (tracing) epochs, one at a time")
            first = {v: w.train_one_epoch(is_last=False) for v, w in workers.items()}
            timed = {v: [] for v in VARIANTS}
            order_log = []
            for round_number in range(arguments.epochs):
                shift = round_number % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                order_log.append(list(order))
                is_last = round_number == arguments.epochs - 1
                for variant in order:
                    figures = workers[variant].train_one_epoch(is_last)
                    timed[variant].append(figures)
                    logger.info(
                        "round %d %s: %.2f s wall, %.2f s CPU",
                        round_number + 1,
                        variant,
                        figures["seconds"],
                        figures["cpu_seconds"],
                    )
            done = {v: w.after for v, w in workers.items()}
        finally:
            for worker in workers.values():
                worker.close()

    variants = {v: summarise_variant(timed[v], first[v], done[v]) for v in VARIANTS}
    baseline = variants[BASELINE]
    speedups = {
        v: {
            measure: round(baseline[key] / variants[v][key], 2)
            for measure, key in SPEEDUP_MEASURES.items()
        }
        for v in VARIANTS
        if v != BASELINE
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "benchmarks/training_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {
            **machine_description(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "batch_size": arguments.batch_size,
        "timed_epochs": arguments.epochs,
        "round_orders": order_log,
        "hyperparameters": {v: done[v]["hyperparameters"] for v in VARIANTS},
        "variants": variants,
        "speedup_over_naive": speedups,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": max(speedups[v]["wall"] for v in LIKE_FOR_LIKE) >= TARGET_SPEEDUP,
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }


def markdown_table(results: dict) -> str:
    lines = [
        "| variant | parameters | first epoch s | epoch s: median (all) | rows/s "
        "| CPU s/epoch | others' CPU s (all) | peak RSS MB "
        "| speedup: median / best epoch / CPU |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name, figures in results["variants"].items():
        speedup = results["speedup_over_naive"].get(name)
        speedup_text = (
            " / ".join(f"{speedup[m]}x" for m in SPEEDUP_MEASURES) if speedup else "1x"
        )
        all_epochs = ", ".join(str(s) for s in figures["epoch_seconds"])
        others = ", ".join(str(s) for s in figures["epoch_other_processes_cpu_seconds"])
        lines.append(
            f"| {name} | {figures['parameters']:,} | {figures['first_epoch_seconds']} "
            f"| {figures['median_epoch_seconds']} ({all_epochs}) "
            f"| {figures['rows_per_second']:,} | {figures['median_epoch_cpu_seconds']} "
            f"| {others} "
            f"| {figures['peak_rss_mb']:,} | {speedup_text} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[3:]),
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per variant (default 3)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per batch for every variant (default: tf_keras.batch_size)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {arguments.epochs}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if arguments.worker:
        run_worker(
            arguments.worker, arguments.data_dir, arguments.epochs, arguments.batch_size
        )
        return 0
    if arguments.batch_size is None:
        from lib.config import load_settings

        arguments.batch_size = int(load_settings([]).tf_keras.batch_size)
    results = run_benchmark(arguments)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nFigures written to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
