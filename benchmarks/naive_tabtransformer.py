"""A TabTransformer built the straightforward way: the baseline of the speed benchmark.

This is how a first Keras 3 implementation usually looks (the keras-io structured
data examples are built this way), and what ``training_throughput.py`` measures our
model against:

- one ``keras.Input`` per column: strings for the categorical columns, floats for
  the numeric ones, fed from a ``tf.data`` dataset of dicts of raw columns;
- a ``StringLookup`` and an ``Embedding`` per categorical column inside the model,
  so every batch looks its strings up again;
- ``MultiHeadAttention`` with ``key_dim`` equal to the embedding size, so each head
  projects to the full width instead of ``embedding_dim / n_heads``;
- numeric columns layer-normalised and joined after the transformer, as in the paper.

Its size matches our model's: same number of blocks, heads, embedding size, the same
feed-forward width (4 x embedding size) and MLP head. Do not speed it up: a test
checks that the attention keeps the full key size, so the baseline stays naive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import polars as pl
import tensorflow as tf
from keras import layers

from lib.data import MISSING


def raw_columns(
    frame: pl.DataFrame,
    categorical_columns: Sequence[str],
    numeric_columns: Sequence[str],
) -> dict[str, np.ndarray]:
    """The columns as the naive model reads them: strings and float32, no encoding."""
    columns = {
        column: np.array(frame[column].fill_null(MISSING).to_list(), dtype=object)
        for column in categorical_columns
    }
    columns.update(
        {
            column: frame[column].to_numpy().astype(np.float32)
            for column in numeric_columns
        }
    )
    return columns


def make_naive_dataset(
    columns: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """A dict of raw columns per batch, shuffled and prefetched like ours."""
    dataset = tf.data.Dataset.from_tensor_slices(
        (dict(columns), labels.astype(np.float32).reshape(-1, 1))
    )
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def vocabularies_of(
    frame: pl.DataFrame, categorical_columns: Sequence[str]
) -> dict[str, list[str]]:
    """Sorted distinct values of each categorical column, ``?`` included."""
    return {
        column: sorted(frame[column].fill_null(MISSING).unique().to_list())
        for column in categorical_columns
    }


def naive_transformer_block(
    tokens, *, n_heads, embedding_dim, attention_dropout, feedforward_dropout, name
):
    # key_dim is the whole embedding size per head: the straightforward choice.
    attended = layers.MultiHeadAttention(
        num_heads=n_heads,
        key_dim=embedding_dim,
        dropout=attention_dropout,
        name=f"{name}_attention",
    )(tokens, tokens)
    tokens = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([tokens, attended]))
    hidden = layers.Dense(4 * embedding_dim, activation="gelu")(tokens)
    hidden = layers.Dropout(feedforward_dropout)(hidden)
    hidden = layers.Dense(embedding_dim)(hidden)
    return layers.LayerNormalization(epsilon=1e-6)(layers.Add()([tokens, hidden]))


def build_naive_tabtransformer(
    vocabularies: Mapping[str, Sequence[str]],
    numeric_columns: Sequence[str],
    *,
    n_blocks: int = 3,
    n_heads: int = 4,
    embedding_dim: int = 32,
    attention_dropout: float = 0.1,
    feedforward_dropout: float = 0.1,
    mlp_dropout: float = 0.2,
    mlp_layers: int = 2,
    mlp_units: int = 128,
    **_training_settings,
) -> keras.Model:
    """Build the naive network; training settings (optimiser, loss) are ignored."""
    inputs, column_embeddings = {}, []
    for column, vocabulary in vocabularies.items():
        inputs[column] = keras.Input(shape=(), dtype="string", name=column)
        lookup = layers.StringLookup(
            vocabulary=list(vocabulary), num_oov_indices=1, name=f"{column}_lookup"
        )
        embedding = layers.Embedding(
            lookup.vocabulary_size(), embedding_dim, name=f"{column}_embedding"
        )
        column_embeddings.append(embedding(lookup(inputs[column])))
    for column in numeric_columns:
        inputs[column] = keras.Input(shape=(), dtype="float32", name=column)

    tokens = keras.ops.stack(column_embeddings, axis=1)
    for block in range(n_blocks):
        tokens = naive_transformer_block(
            tokens,
            n_heads=n_heads,
            embedding_dim=embedding_dim,
            attention_dropout=attention_dropout,
            feedforward_dropout=feedforward_dropout,
            name=f"naive_block{block}",
        )
    features = layers.Flatten()(tokens)
    if numeric_columns:
        numeric = keras.ops.stack([inputs[c] for c in numeric_columns], axis=1)
        features = layers.Concatenate()(
            [features, layers.LayerNormalization()(numeric)]
        )
    for _ in range(mlp_layers):
        features = layers.Dense(mlp_units, activation="relu")(features)
        features = layers.Dropout(mlp_dropout)(features)
    probability = layers.Dense(1, activation="sigmoid", name="probability")(features)
    return keras.Model(inputs, probability, name="naive_tabtransformer")


def compile_naive(model: keras.Model, hyperparameters: Mapping) -> None:
    """AdamW with our rate, betas, clipping and decay; otherwise Keras' defaults."""
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=hyperparameters["learning_rate"],
            beta_1=hyperparameters["beta_1"],
            beta_2=hyperparameters["beta_2"],
            clipnorm=hyperparameters["clipnorm"],
            weight_decay=hyperparameters.get("weight_decay", 0.0),
        ),
        loss=keras.losses.BinaryCrossentropy(),
    )


if __name__ == "__main__":
    import argparse

    # A module, not a benchmark: --help describes it; training_throughput.py runs it.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
