"""The naive baseline of the training benchmark stays working and stays naive."""

import importlib.util
from pathlib import Path

import keras
import numpy as np
import polars as pl
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_module(name: str):
    # benchmarks/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def naive():
    return load_benchmark_module("naive_tabtransformer")


@pytest.fixture(scope="module")
def rows():
    # A missing value (None) and a value never seen in training ("Never-worked").
    return pl.DataFrame(
        {
            "workclass": ["Private", None, "State-gov", "Never-worked", "Private"],
            "sex": ["Male", "Female", "Female", "Male", "Male"],
            "age": [39, 50, 38, 53, 28],
            "hours_per_week": [40, 13, 40, 40, 60],
        }
    )


@pytest.mark.parametrize(("embedding_dim", "n_heads"), [(16, 2), (32, 4)])
def test_naive_model_gives_one_probability_per_row_with_full_key_size(
    naive, rows, embedding_dim, n_heads
):
    categorical, numeric = ["workclass", "sex"], ["age", "hours_per_week"]
    vocabularies = naive.vocabularies_of(rows.head(3), categorical)
    assert vocabularies["workclass"] == ["?", "Private", "State-gov"]
    keras.utils.set_random_seed(0)
    model = naive.build_naive_tabtransformer(
        vocabularies,
        numeric,
        n_blocks=2,
        n_heads=n_heads,
        embedding_dim=embedding_dim,
        mlp_layers=1,
        mlp_units=8,
    )

    probabilities = model.predict(
        naive.raw_columns(rows, categorical, numeric), verbose=0
    )

    assert probabilities.shape == (rows.height, 1)
    assert np.all((probabilities > 0.0) & (probabilities < 1.0))
    attention = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    assert len(attention) == 2
    # The optimised model uses embedding_dim // n_heads; the baseline must not.
    assert [layer.key_dim for layer in attention] == [embedding_dim, embedding_dim]
    assert all(layer.num_heads == n_heads for layer in attention)


def test_naive_dataset_batches_raw_strings(naive, rows):
    columns = naive.raw_columns(rows, ["workclass", "sex"], ["age", "hours_per_week"])
    dataset = naive.make_naive_dataset(
        columns, np.array([0, 1, 0, 1, 0]), batch_size=2, shuffle=False, seed=0
    )
    features, labels = next(iter(dataset))
    assert features["workclass"].numpy().tolist() == [b"Private", b"?"]
    assert features["age"].dtype.name == "float32"
    assert labels.numpy().ravel().tolist() == [0.0, 1.0]
