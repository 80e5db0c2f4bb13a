"""The losses against their closed form, and behaviour of the network."""

import keras
import numpy as np
import pytest

from lib.features import SCALED_LIMIT, FeatureEncoder
from lib.model import FocalLoss, HashDropout, build_tabtransformer, focal_loss_value
from lib.tuning import LOG_SCALED_COLUMNS


@pytest.mark.parametrize(
    ("label", "probability", "alpha", "gamma", "expected"),
    [
        # -0.25 * (1 - 0.9)^2 * ln(0.9) = 0.25 * 0.01 * 0.1053605
        (1.0, 0.9, 0.25, 2.0, 0.000263401290),
        # -(1 - 0.25) * (1 - 0.1)^2 * ln(0.1) = 0.75 * 0.81 * 2.3025851
        (0.0, 0.9, 0.25, 2.0, 1.398820444),
        # gamma 0, alpha 0.5: half the cross-entropy, 0.5 * ln 2
        (1.0, 0.5, 0.5, 0.0, 0.346573590),
        # -0.6 * (1 - 0.2)^1 * ln(0.2) = 0.6 * 0.8 * 1.6094379
        (1.0, 0.2, 0.6, 1.0, 0.772530198),
    ],
)
def test_focal_loss_matches_hand_computed_values(
    label, probability, alpha, gamma, expected
):
    value = focal_loss_value(np.array([label]), np.array([probability]), alpha, gamma)
    assert float(value[0]) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_agrees_with_keras_balanced_focal_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 64).astype("float32")
    probabilities = rng.uniform(0.01, 0.99, 64).astype("float32")
    ours = FocalLoss(alpha=0.3, gamma=1.5)(labels, probabilities)
    reference = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.3, gamma=1.5
    )(labels.reshape(-1, 1), probabilities.reshape(-1, 1))
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


@pytest.fixture(scope="module")
def encoder_and_rows(prepared_run_dir):
    from lib.data import read_prepared

    prepared = read_prepared(prepared_run_dir)
    encoder = FeatureEncoder.fit(prepared.train, "drop", LOG_SCALED_COLUMNS)
    return encoder, encoder.encode_frame(prepared.validation.head(64))


def one_block_model(encoder, **hyperparameters):
    return build_tabtransformer(
        encoder.cardinalities,
        len(encoder.numeric_columns),
        n_blocks=1,
        **hyperparameters,
    )


@pytest.mark.parametrize("numeric_embedding", ["periodic", "none"])
def test_network_gives_one_probability_per_row(encoder_and_rows, numeric_embedding):
    encoder, rows = encoder_and_rows
    model = one_block_model(
        encoder, embedding_dim=16, n_heads=2, numeric_embedding=numeric_embedding
    )
    output = model.predict(rows, verbose=0)
    assert output.shape == (64, 1)
    assert np.all((output > 0) & (output < 1))


def test_a_row_scores_the_same_alone_or_in_a_batch(encoder_and_rows):
    encoder, rows = encoder_and_rows
    model = build_tabtransformer(encoder.cardinalities, len(encoder.numeric_columns))
    batch = model(rows, training=False).numpy().reshape(-1)
    single = model({k: v[5:6] for k, v in rows.items()}, training=False).numpy()
    assert float(single[0, 0]) == pytest.approx(batch[5], abs=1e-6)


def test_unknown_numeric_embedding_is_refused():
    with pytest.raises(ValueError, match="numeric_embedding must be"):
        build_tabtransformer([3, 4], 2, numeric_embedding="linear")


def test_unseen_and_missing_categories_get_their_own_indices(encoder_and_rows):
    encoder, _ = encoder_and_rows
    columns = {c: ["Private"] * 3 for c in encoder.categorical_columns}
    columns["workclass"] = ["Never-seen-before", "?", " Private "]
    columns.update({c: [1.0, 2.0, 3.0] for c in encoder.numeric_columns})
    encoded = encoder.encode(columns)
    workclass = encoder.categorical_columns.index("workclass")
    private = encoder.vocabularies["workclass"].index("Private") + 2
    assert encoded["categorical"][:, workclass].tolist() == [0, 1, private]


def test_extreme_numbers_are_clipped_before_float32_can_overflow(encoder_and_rows):
    encoder, _ = encoder_and_rows
    columns = {c: ["Private"] * 3 for c in encoder.categorical_columns}
    columns.update({c: [40.0, 40.0, 40.0] for c in encoder.numeric_columns})
    columns["hours_per_week"] = [3.4e38, -3.4e38, 40.0]
    encoded = encoder.encode(columns)
    hours = encoder.numeric_columns.index("hours_per_week")
    mean = encoder.numeric_means["hours_per_week"]
    std = encoder.numeric_stds["hours_per_week"]
    assert encoded["numeric"][:, hours].tolist() == pytest.approx(
        [SCALED_LIMIT, -SCALED_LIMIT, (40.0 - mean) / std]
    )


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_hash_dropout_drops_the_rate_and_keeps_the_expectation(rate):
    layer = HashDropout(rate, seed=3)
    ones = np.ones((512, 13, 128), dtype="float32")
    first = keras.ops.convert_to_numpy(layer(ones, training=True))
    second = keras.ops.convert_to_numpy(layer(ones, training=True))

    dropped = first == 0.0
    # 852,000 draws: the dropped share is within 0.3 percentage points of the rate.
    assert abs(dropped.mean() - rate) < 0.003
    np.testing.assert_allclose(first[~dropped], 1.0 / (1.0 - rate), rtol=1e-6)
    assert abs(first.mean() - 1.0) < 0.01
    # A new mask on every call, not correlated with the last one.
    both = np.logical_and(dropped, second == 0.0).mean()
    assert abs(both - rate * rate) < 0.003
    # Neighbouring elements are not dropped together more than chance.
    neighbours = np.logical_and(dropped[..., 1:], dropped[..., :-1]).mean()
    assert abs(neighbours - rate * rate) < 0.003
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(ones, training=False)), ones
    )


def test_hash_dropout_survives_saving(tmp_path, encoder_and_rows):
    encoder, rows = encoder_and_rows
    model = one_block_model(encoder, attention_dropout=0.2, feedforward_dropout=0.2)
    assert any(isinstance(layer, HashDropout) for layer in model.layers)
    attention = model.get_layer("block0_attention")
    assert isinstance(attention._dropout_layer, HashDropout)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        loaded.predict(rows, verbose=0), model.predict(rows, verbose=0), atol=1e-6
    )
