"""The TabTransformer (Huang et al., 2020) in Keras 3, and its losses.

Each categorical column gets its own embedding table (stored as one table with a
per-column offset, so a lookup is a single gather). A learned column embedding is
added so attention can tell columns apart. Transformer blocks turn the column
embeddings into contextual ones; an MLP reads them together with the numeric
features. With ``numeric_embedding="periodic"`` every numeric column becomes a token
too (Gorishniy et al., 2022) and joins the attention; with ``"none"`` numerics are
layer-normalised and joined after the transformer, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

PACKAGE = "adult_tabtransformer"


@keras.saving.register_keras_serializable(package=PACKAGE)
def focal_loss_value(y_true, y_pred, alpha: float = 0.25, gamma: float = 2.0):
    """Alpha-balanced focal loss per example: -a_t (1 - p_t)^gamma log(p_t).

    ``alpha`` weighs the positive class and ``1 - alpha`` the negative one; with
    ``gamma = 0`` and ``alpha = 0.5`` it is half the binary cross-entropy.
    """
    y_true = ops.cast(ops.reshape(y_true, (-1,)), y_pred.dtype)
    probability = ops.clip(ops.reshape(y_pred, (-1,)), 1e-7, 1.0 - 1e-7)
    p_t = y_true * probability + (1.0 - y_true) * (1.0 - probability)
    alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    return -alpha_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FocalLoss(keras.losses.Loss):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.gamma = gamma

    def call(self, y_true, y_pred):
        return focal_loss_value(y_true, y_pred, self.alpha, self.gamma)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CategoricalEmbedding(layers.Layer):
    """One embedding table per column, looked up with a single gather."""

    def __init__(self, cardinalities: Sequence[int], embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.cardinalities = [int(c) for c in cardinalities]
        self.embedding_dim = embedding_dim
        self.offsets = np.cumsum([0, *self.cardinalities[:-1]]).astype("int32")

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=(sum(self.cardinalities), self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.05),
        )

    def call(self, indices):
        return ops.take(self.table, indices + self.offsets, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "cardinalities": self.cardinalities,
            "embedding_dim": self.embedding_dim,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeriodicEmbedding(layers.Layer):
    """Numeric column -> [cos(2 pi c x), sin(2 pi c x)] -> linear -> ReLU, per column.

    The frequencies ``c`` are learned, one set per column, initialised from
    N(0, frequency_scale); the linear map is separate for every column.
    """

    def __init__(
        self, n_frequencies: int, embedding_dim: int, frequency_scale: float, **kwargs
    ):
        super().__init__(**kwargs)
        self.n_frequencies = n_frequencies
        self.embedding_dim = embedding_dim
        self.frequency_scale = frequency_scale

    def build(self, input_shape):
        n_columns = input_shape[-1]
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(n_columns, self.n_frequencies),
            initializer=keras.initializers.RandomNormal(stddev=self.frequency_scale),
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(n_columns, 2 * self.n_frequencies, self.embedding_dim),
            initializer="glorot_uniform",
        )
        self.bias = self.add_weight(
            name="bias", shape=(n_columns, self.embedding_dim), initializer="zeros"
        )

    def call(self, numeric):
        angles = 2.0 * math.pi * ops.expand_dims(numeric, -1) * self.frequencies
        periodic = ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1)
        projected = ops.einsum("bnk,nkd->bnd", periodic, self.kernel) + self.bias
        return ops.relu(projected)

    def get_config(self):
        return {
            **super().get_config(),
            "n_frequencies": self.n_frequencies,
            "embedding_dim": self.embedding_dim,
            "frequency_scale": self.frequency_scale,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ColumnEmbedding(layers.Layer):
    """Adds a learned vector per token position, so attention knows the column."""

    def build(self, input_shape):
        self.column_vectors = self.add_weight(
            name="column_vectors",
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.05),
        )

    def call(self, tokens):
        return tokens + self.column_vectors


@keras.saving.register_keras_serializable(package=PACKAGE)
class HashDropout(layers.Layer):
    """Dropout whose mask hashes each element's position with a per-step counter.

    Same rate and scaling as ``keras.layers.Dropout``. Keras draws its mask with a
    random-number kernel that XLA runs on its own, slowly, on CPU; a few integer
    multiplies and shifts (a MurmurHash3-style finaliser) fuse into the surrounding
    step instead. On the default model this cut an XLA training epoch by about a
    fifth, with the same validation ROC-AUC over three seeds (benchmarks/README.md).
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        # [seed, counter]; the counter moves on at every call, so every step
        # gets a new mask.
        seed, counter = tf.unstack(tf.cast(self.seed_generator.next(), tf.uint32))
        position = tf.bitcast(
            tf.reshape(tf.range(tf.size(inputs), dtype=tf.int32), tf.shape(inputs)),
            tf.uint32,
        )
        bits = _mix(position * 0x9E3779B1 + seed * 0x27D4EB2F, 0x85EBCA6B)
        bits = _mix(bits + counter * 0x165667B1, 0xC2B2AE35)
        keep = bits >= tf.constant(int(self.rate * 2**32), tf.uint32)
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _mix(bits, multiplier: int):
    bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, 16)) * multiplier
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, 13))


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenAttention(layers.MultiHeadAttention):
    """Keras' multi-head attention with ``HashDropout`` on the attention weights."""

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self._dropout_layer = HashDropout(self._dropout, seed=self.seed)


def transformer_block(
    tokens, *, n_heads, embedding_dim, attention_dropout, feedforward_dropout, name
):
    """Self-attention and a position-wise feed-forward, each with residual + norm."""
    attended = TokenAttention(
        num_heads=n_heads,
        key_dim=max(1, embedding_dim // n_heads),
        dropout=attention_dropout,
        name=f"{name}_attention",
    )(tokens, tokens)
    tokens = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(
        layers.Add()([tokens, attended])
    )
    hidden = layers.Dense(4 * embedding_dim, activation="gelu", name=f"{name}_ff1")(
        tokens
    )
    hidden = HashDropout(feedforward_dropout)(hidden)
    hidden = layers.Dense(embedding_dim, name=f"{name}_ff2")(hidden)
    return layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(
        layers.Add()([tokens, hidden])
    )


def build_tabtransformer(
    cardinalities: Sequence[int],
    n_numeric: int,
    *,
    n_blocks: int = 3,
    n_heads: int = 4,
    embedding_dim: int = 32,
    attention_dropout: float = 0.1,
    feedforward_dropout: float = 0.1,
    mlp_dropout: float = 0.2,
    mlp_layers: int = 2,
    mlp_units: int = 128,
    numeric_embedding: str = "periodic",
    n_frequencies: int = 16,
    frequency_scale: float = 0.1,
    **_training_settings,
) -> keras.Model:
    """Build the network; training hyperparameters (loss, optimiser) are ignored."""
    if numeric_embedding not in ("periodic", "none"):
        raise ValueError(
            f"numeric_embedding must be 'periodic' or 'none', got {numeric_embedding!r}"
        )
    categorical = keras.Input(
        shape=(len(cardinalities),), dtype="int32", name="categorical"
    )
    numeric = keras.Input(shape=(n_numeric,), dtype="float32", name="numeric")

    tokens = CategoricalEmbedding(
        cardinalities, embedding_dim, name="categorical_embedding"
    )(categorical)
    if numeric_embedding == "periodic" and n_numeric:
        numeric_tokens = PeriodicEmbedding(
            n_frequencies, embedding_dim, frequency_scale, name="numeric_embedding"
        )(numeric)
        tokens = layers.Concatenate(axis=1)([tokens, numeric_tokens])
    tokens = ColumnEmbedding(name="column_embedding")(tokens)

    for block in range(n_blocks):
        tokens = transformer_block(
            tokens,
            n_heads=n_heads,
            embedding_dim=embedding_dim,
            attention_dropout=attention_dropout,
            feedforward_dropout=feedforward_dropout,
            name=f"block{block}",
        )

    features = layers.Flatten(name="contextual")(tokens)
    if numeric_embedding == "none" and n_numeric:
        normalised = layers.LayerNormalization(name="numeric_norm")(numeric)
        features = layers.Concatenate()([features, normalised])
    for position in range(mlp_layers):
        features = layers.Dense(mlp_units, activation="relu", name=f"mlp{position}")(
            features
        )
        features = HashDropout(mlp_dropout)(features)
    probability = layers.Dense(1, activation="sigmoid", name="probability")(features)
    return keras.Model(
        {"categorical": categorical, "numeric": numeric},
        probability,
        name="tabtransformer",
    )


def make_loss(use_focal_loss: bool, focal_alpha: float, focal_gamma: float):
    if use_focal_loss:
        return FocalLoss(alpha=focal_alpha, gamma=focal_gamma)
    return keras.losses.BinaryCrossentropy()


def make_optimizer(
    learning_rate,
    beta_1,
    beta_2,
    clipnorm,
    weight_decay=0.0,
    lr_schedule="constant",
    decay_steps=None,
):
    """AdamW; a cosine schedule decays the rate to 5% over ``decay_steps``."""
    if lr_schedule == "cosine" and decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=int(decay_steps), alpha=0.05
        )
    elif lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be constant or cosine, got {lr_schedule!r}")
    return keras.optimizers.AdamW(
        learning_rate=learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        clipnorm=clipnorm,
        weight_decay=weight_decay,
    )
