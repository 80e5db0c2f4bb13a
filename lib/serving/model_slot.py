"""The model of one worker process: loaded once after the fork, then warmed up.

TensorFlow is imported here for the first time in the process, in a background
thread, so the worker answers ``/ping`` with 503 while the model loads. A model that
cannot be loaded, or whose warm-up prediction fails, is fatal: ``on_failure`` is
called with the reason, and the server's callback ends the whole server.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lib.serving.parsing import ParsedRecords, RecordSchema, RequestError

logger = logging.getLogger(__name__)

# The first record of adult.test, without its label: it must score like any other.
WARM_UP_LINE = (
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, "
    "Black, Male, 0, 0, 40, United-States"
)


class ModelNotReady(RuntimeError):
    """A prediction was asked for before the model finished loading."""


class ModelSlot:
    """Holds the artifact of this process once it is loaded and warm."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tf_threads: int,
        predict_batch_size: int,
        on_failure: Callable[[str], None],
    ):
        self.model_dir = Path(model_dir)
        self.tf_threads = tf_threads
        self.predict_batch_size = predict_batch_size
        self._on_failure = on_failure
        self._ready = threading.Event()
        self._artifact = None
        self.schema: RecordSchema | None = None

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    @property
    def threshold(self) -> float:
        return self._loaded_artifact().threshold

    def wait_until_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def start_loading(self) -> threading.Thread:
        """Load and warm up in a background thread; returns that thread."""
        loader = threading.Thread(target=self.load, name="model-loader", daemon=True)
        loader.start()
        return loader

    def load(self) -> None:
        """Load and warm up now; on failure call ``on_failure`` with the reason."""
        started = time.perf_counter()
        try:
            artifact, schema = self._load_and_warm_up()
        except Exception as error:  # noqa: BLE001 - every failure here ends the server
            self._on_failure(
                f"cannot serve the model in {self.model_dir}: "
                f"{self._describe_failure(error)}. Check that the folder holds a "
                "complete artifact written by this project's training "
                "(manifest.json, model.keras, preprocessing.json)."
            )
            return
        self._artifact, self.schema = artifact, schema
        logger.info(
            "model loaded and warmed up in %.1f s (threshold %.3f, %d TensorFlow "
            "threads)",
            time.perf_counter() - started,
            artifact.threshold,
            self.tf_threads,
        )
        self._ready.set()

    def predict(self, parsed: ParsedRecords) -> np.ndarray:
        """P(income > 50K) per record, in order; RequestError if the model cannot."""
        return predict_probabilities(
            self._loaded_artifact(), parsed, self.predict_batch_size
        )

    def _loaded_artifact(self):
        if self._artifact is None:
            raise ModelNotReady("the model is still loading")
        return self._artifact

    def _load_and_warm_up(self):
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.tf_threads)
        except RuntimeError:  # TensorFlow already ran in this process (not a worker)
            logger.warning(
                "TensorFlow is already initialised here; its thread counts stay as "
                "they are instead of %d",
                self.tf_threads,
            )
        from lib.artifact import load_artifact

        artifact = load_artifact(self.model_dir)
        schema = RecordSchema.from_artifact(artifact)
        warm_up(artifact, schema, self.predict_batch_size)
        return artifact, schema

    def _describe_failure(self, error: Exception) -> str:
        # The import may itself be what failed, so it is looked up, not imported.
        artifact_module = sys.modules.get("lib.artifact")
        expected = (WarmUpError, getattr(artifact_module, "ArtifactError", WarmUpError))
        if isinstance(error, expected):
            return str(error)
        logger.error("loading the model from %s failed", self.model_dir, exc_info=error)
        return f"{type(error).__name__}: {error}"


def predict_probabilities(
    artifact, parsed: ParsedRecords, batch_size: int
) -> np.ndarray:
    """P(income > 50K) per record, in order; RequestError if the model cannot."""
    encoded = artifact.encode(parsed.columns)
    if parsed.count <= batch_size:
        probabilities = artifact.predict_encoded(encoded)
    else:
        # Bounded batches keep the memory of a 6 MB request modest.
        probabilities = np.concatenate(
            [
                artifact.predict_encoded(
                    {
                        key: rows[start : start + batch_size]
                        for key, rows in encoded.items()
                    }
                )
                for start in range(0, parsed.count, batch_size)
            ]
        )
    not_finite = np.flatnonzero(~np.isfinite(probabilities))
    if not_finite.size:
        index = int(not_finite[0])
        raise RequestError(
            f"record {index}: the model gives no finite probability for it; one of "
            "its numbers is too large for the model",
            record=index,
        )
    return probabilities


class WarmUpError(RuntimeError):
    """The warm-up prediction failed or gave an impossible answer."""


def warm_up(artifact, schema: RecordSchema, batch_size: int) -> None:
    """Score a known record alone and in a full batch; both must be probabilities.

    Before that, the scoring function is compiled for every batch size it pads
    to, so no request waits for XLA.
    """
    from lib.serving.parsing import parse_csv_exact

    artifact.warm_up()

    try:
        one = parse_csv_exact(WARM_UP_LINE, schema)
    except RequestError as error:
        raise WarmUpError(
            f"the artifact's columns ({schema.describe_columns()}) do not fit the "
            f"Adult records this server reads: {error}"
        ) from error
    batch = parse_csv_exact("\n".join([WARM_UP_LINE] * batch_size), schema)
    single = predict_probabilities(artifact, one, batch_size)
    repeated = predict_probabilities(artifact, batch, batch_size)
    if single.shape != (1,) or not 0.0 <= single[0] <= 1.0:
        raise WarmUpError(f"the warm-up prediction is {single!r}, not a probability")
    if repeated.shape != (batch.count,) or not np.allclose(repeated, single[0]):
        raise WarmUpError(
            "the warm-up record scores differently alone and in a batch "
            f"({single[0]!r} against {repeated[:3]!r}...)"
        )
