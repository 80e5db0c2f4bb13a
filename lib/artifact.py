"""The model artifact: one folder with everything needed to score a raw record.

Layout::

    model.keras           the trained Keras model (encoded inputs -> probability)
    preprocessing.json    vocabularies, normalisation statistics, column order
    manifest.json         threshold, library versions, training summary, and the
                          SHA-256 of every other file so corruption is caught
    saved_model/          a TensorFlow SavedModel export of the same network, for
                          TF Serving or other runtimes (optional, see save_artifact)

Loading checks the manifest before anything runs. Scoring goes through one
XLA-compiled ``tf.function`` with a fixed input signature: rows are padded up to one
of ``SCORING_BATCH_SIZES`` (larger inputs go in chunks of the largest), so XLA only
ever compiles those few shapes, and ``warm_up`` compiles them all up front.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lib import model as _custom_layers  # noqa: F401  (registers them for loading)
from lib.features import FeatureEncoder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
MANIFEST_FILE = "manifest.json"
SAVED_MODEL_DIR = "saved_model"
# XLA compiles once per input shape; padding to these keeps that to four shapes.
# A single record is the latency-critical case, so it gets its own size.
SCORING_BATCH_SIZES = (1, 16, 256, 4096)


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not fit this code."""


def library_versions() -> dict[str, str]:
    import optuna
    import polars

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "polars": polars.__version__,
        "optuna": optuna.__version__,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(
    directory: str | Path,
    model: keras.Model,
    encoder: FeatureEncoder,
    *,
    threshold: float,
    summary: Mapping | None = None,
    export_saved_model: bool = True,
) -> Path:
    """Write the artifact; the manifest is written last, so its presence means done."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    model.save(directory / MODEL_FILE)
    (directory / PREPROCESSING_FILE).write_text(json.dumps(encoder.to_dict(), indent=2))
    if export_saved_model:
        model.export(
            str(directory / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False
        )
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "threshold": float(threshold),
        "feature_columns": encoder.feature_columns,
        "label": "income > 50K",
        "library_versions": library_versions(),
        "summary": dict(summary or {}),
        "checksums": {
            name: _sha256(directory / name) for name in (MODEL_FILE, PREPROCESSING_FILE)
        },
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    logger.info("Saved the model artifact to %s (threshold %.3f)", directory, threshold)
    return directory


class Artifact:
    """A loaded model with its encoder and decision threshold."""

    def __init__(self, model: keras.Model, encoder: FeatureEncoder, manifest: dict):
        self.model = model
        self.encoder = encoder
        self.manifest = manifest
        self.threshold = float(manifest["threshold"])
        n_categorical = len(encoder.categorical_columns)
        n_numeric = len(encoder.numeric_columns)
        signature = [
            tf.TensorSpec((None, n_categorical), tf.int32, name="categorical"),
            tf.TensorSpec((None, n_numeric), tf.float32, name="numeric"),
        ]

        # XLA fuses the many small element-wise steps of the transformer; on CPU it
        # scores several times faster than the plain graph.
        @tf.function(input_signature=signature, jit_compile=True)
        def score(categorical, numeric):
            outputs = model(
                {"categorical": categorical, "numeric": numeric}, training=False
            )
            return tf.reshape(outputs, (-1,))

        # The concrete function skips tf.function's per-call argument matching,
        # about a third of the time of a single-record prediction.
        self._score = score.get_concrete_function()

    @property
    def feature_columns(self) -> list[str]:
        return list(self.encoder.feature_columns)

    @property
    def categorical_columns(self) -> list[str]:
        return list(self.encoder.categorical_columns)

    @property
    def numeric_columns(self) -> list[str]:
        return list(self.encoder.numeric_columns)

    @property
    def metadata(self) -> dict:
        return {k: v for k, v in self.manifest.items() if k != "checksums"}

    def encode(self, columns: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        return self.encoder.encode(columns)

    def predict_encoded(self, encoded: Mapping[str, np.ndarray]) -> np.ndarray:
        categorical = np.asarray(encoded["categorical"], dtype=np.int32)
        numeric = np.asarray(encoded["numeric"], dtype=np.float32)
        largest = SCORING_BATCH_SIZES[-1]
        parts = [
            self._score_padded(
                categorical[start : start + largest], numeric[start : start + largest]
            )
            for start in range(0, len(categorical), largest)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _score_padded(self, categorical: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        count = len(categorical)
        size = next(size for size in SCORING_BATCH_SIZES if size >= count)
        if size > count:
            # Padding rows (index 0, number 0) are scored and dropped; rows do not
            # interact, so they change nothing for the real ones.
            categorical = np.pad(categorical, ((0, size - count), (0, 0)))
            numeric = np.pad(numeric, ((0, size - count), (0, 0)))
        probabilities = self._score(
            tf.convert_to_tensor(categorical), tf.convert_to_tensor(numeric)
        )
        return probabilities.numpy()[:count].astype(np.float64)

    def warm_up(self) -> None:
        """Compile the scoring function for every padded batch size now."""
        for size in SCORING_BATCH_SIZES:
            self._score(
                tf.zeros((size, len(self.encoder.categorical_columns)), tf.int32),
                tf.zeros((size, len(self.encoder.numeric_columns)), tf.float32),
            )

    def predict_proba(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return self.predict_encoded(self.encode(columns))

    def predict_frame(self, frame, batch_size: int = 8192) -> np.ndarray:
        """Probabilities for a parsed polars frame, in batches."""
        parts = [
            self.predict_encoded(
                self.encoder.encode_frame(frame.slice(start, batch_size))
            )
            for start in range(0, frame.height, batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


def load_artifact(directory: str | Path) -> Artifact:
    """Load and verify an artifact; raise ArtifactError saying what is wrong."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{directory}: no {MANIFEST_FILE}; this is not a complete model artifact "
            "(was training interrupted, or is the model directory wrong?)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(
            f"{manifest_path}: unreadable manifest ({error})"
        ) from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_path}: artifact format {manifest.get('format_version')!r}, "
            f"this code reads format {FORMAT_VERSION}"
        )
    for name, expected in manifest.get("checksums", {}).items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        if _sha256(path) != expected:
            raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt")
    try:
        encoder = FeatureEncoder.from_dict(
            json.loads((directory / PREPROCESSING_FILE).read_text())
        )
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
    except Exception as error:  # any failure here means the artifact is unusable
        raise ArtifactError(f"{directory}: cannot load the model ({error})") from error
    if manifest.get("feature_columns") != encoder.feature_columns:
        raise ArtifactError(
            f"{directory}: manifest and preprocessing disagree on the feature columns"
        )
    expected_inputs = {
        "categorical": len(encoder.categorical_columns),
        "numeric": len(encoder.numeric_columns),
    }
    actual_inputs = {t.name.split(":")[0]: t.shape[-1] for t in model.inputs}
    if actual_inputs != expected_inputs:
        raise ArtifactError(
            f"{directory}: the model expects inputs {actual_inputs} but the "
            f"preprocessing produces {expected_inputs}"
        )
    logger.info("Loaded the model artifact from %s", directory)
    return Artifact(model, encoder, manifest)
