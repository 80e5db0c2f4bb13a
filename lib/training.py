"""Fit a TabTransformer: input pipeline, callbacks, checkpoints, prediction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lib import evaluation
from lib.model import build_tabtransformer, make_loss, make_optimizer

logger = logging.getLogger(__name__)


def make_dataset(
    encoded: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of already-encoded arrays; nothing is looked up per batch."""
    tensors = (dict(encoded), labels.astype(np.float32).reshape(-1, 1))
    if sample_weight is not None:
        tensors = (*tensors, sample_weight.astype(np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that give both classes the same total weight."""
    positives = float(labels.mean())
    return {0: 0.5 / (1.0 - positives), 1: 0.5 / positives}


def compile_model(
    model: keras.Model,
    hyperparameters: Mapping,
    decay_steps: int | None = None,
    *,
    jit_compile: bool = False,
) -> None:
    """Optimiser and loss from the hyperparameters; XLA when ``jit_compile``.

    XLA fuses the transformer's many small element-wise steps, so an epoch of the
    default model takes about a fifth less CPU time, but compiling costs several
    seconds per model. Tuning trains many short-lived models, so it is off by
    default (``tf_keras.jit_compile``; benchmarks/README.md has the figures).
    """
    model.compile(
        optimizer=make_optimizer(
            hyperparameters["learning_rate"],
            hyperparameters["beta_1"],
            hyperparameters["beta_2"],
            hyperparameters["clipnorm"],
            hyperparameters.get("weight_decay", 0.0),
            hyperparameters.get("lr_schedule", "constant"),
            decay_steps,
        ),
        loss=make_loss(
            hyperparameters["use_focal_loss"],
            hyperparameters["focal_alpha"],
            hyperparameters["focal_gamma"],
        ),
        jit_compile=jit_compile,
    )


def predict_probabilities(
    model: keras.Model, encoded: Mapping[str, np.ndarray], batch_size: int = 4096
) -> np.ndarray:
    """P(income > 50K) for every row, as float64."""
    predictions = model.predict(dict(encoded), batch_size=batch_size, verbose=0)
    return predictions.reshape(-1).astype(np.float64)


class ValidationMonitor(keras.callbacks.Callback):
    """Scores the validation set after every epoch with exact sklearn metrics.

    Keeps the weights of the best epoch, stops after ``patience`` epochs without
    improvement, logs a line per epoch and hands each score to ``report`` (the
    Optuna pruner's hook), which may raise to stop the trial.
    """

    def __init__(
        self,
        encoded: Mapping[str, np.ndarray],
        labels: np.ndarray,
        *,
        objective: str,
        patience: int,
        label: str,
        report: Callable[[int, float], None] | None = None,
        batch_size: int = 4096,
    ):
        super().__init__()
        self.encoded = dict(encoded)
        self.labels = labels
        self.objective = objective
        self.patience = patience
        self.label = label
        self.report = report
        self.batch_size = batch_size
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_weights = None
        self.history: list[dict] = []
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        probabilities = predict_probabilities(self.model, self.encoded, self.batch_size)
        score = evaluation.objective_score(self.labels, probabilities, self.objective)
        seconds = time.perf_counter() - self._epoch_started
        self.history.append(
            {
                "epoch": epoch + 1,
                "loss": float(logs["loss"]),
                self.objective: score,
                "seconds": seconds,
            }
        )
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, epoch + 1
            self.best_weights = self.model.get_weights()
        logger.info(
            "%s epoch %d/%d: loss %.4f, validation %s %.4f%s (%.1f s)",
            self.label,
            epoch + 1,
            self.params["epochs"],
            logs["loss"],
            self.objective,
            abs(score),
            " (best)" if improved else "",
            seconds,
        )
        if self.report is not None:
            self.report(epoch + 1, score)
        if epoch + 1 - self.best_epoch >= self.patience:
            logger.info(
                "%s: no improvement for %d epochs, stopping", self.label, self.patience
            )
            self.model.stop_training = True

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class EpochLogger(keras.callbacks.Callback):
    """One readable line per epoch when no validation set is watched."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logger.info(
            "%s epoch %d/%d: loss %.4f (%.1f s)",
            self.label,
            epoch + 1,
            self.params["epochs"],
            logs["loss"],
            time.perf_counter() - self._started,
        )


def build_and_compile(
    encoder,
    hyperparameters: Mapping,
    seed: int,
    *,
    n_rows: int | None = None,
    batch_size: int | None = None,
    schedule_epochs: int | None = None,
    jit_compile: bool = False,
) -> keras.Model:
    """Build and compile; the learning-rate schedule spans ``schedule_epochs``.

    The final model trains for fewer epochs than its trial planned (it stops where
    the trial peaked), so the schedule length is passed separately to follow the
    same learning-rate path as the trial did.
    """
    keras.utils.set_random_seed(seed)
    model = build_tabtransformer(
        encoder.cardinalities, len(encoder.numeric_columns), **hyperparameters
    )
    decay_steps = None
    if n_rows and batch_size and schedule_epochs:
        decay_steps = -(-n_rows // batch_size) * schedule_epochs
    compile_model(model, hyperparameters, decay_steps, jit_compile=jit_compile)
    return model


def fit(
    model: keras.Model,
    train_encoded: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    balance_classes: bool = False,
    sample_weight: np.ndarray | None = None,
    callbacks: list | None = None,
    checkpoint_dir: Path | None = None,
) -> keras.callbacks.History:
    """Train; with ``checkpoint_dir`` each epoch is backed up so a rerun resumes."""
    dataset = make_dataset(
        train_encoded,
        train_labels,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        sample_weight=sample_weight,
    )
    callbacks = list(callbacks or [])
    if checkpoint_dir is not None:
        callbacks.append(
            keras.callbacks.BackupAndRestore(str(checkpoint_dir), save_freq="epoch")
        )
    return model.fit(
        dataset,
        epochs=epochs,
        class_weight=class_weights(train_labels) if balance_classes else None,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=0,
    )
