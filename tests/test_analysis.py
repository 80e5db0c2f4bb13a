"""The analysis: numbers on tiny hand-checked inputs, figures, the model card."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import polars as pl
import pytest
from omegaconf import OmegaConf

from lib import analysis
from lib.config import load_settings
from lib.data import LABEL_COLUMN
from lib.evaluation import test_metrics as compute_test_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --- fixtures: a run folder with synthetic predictions, and small studies -----


def synthetic_predictions(n: int = 2000, seed: int = 3) -> pl.DataFrame:
    """Labels with an informative, roughly calibrated score, and two group columns."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(np.int8)
    logits = rng.normal(2.0 * labels - 1.2, 1.0)
    return pl.DataFrame(
        {
            "source_line": np.arange(2, n + 2),
            LABEL_COLUMN: labels,
            "sex": rng.choice(["Male", "Female"], n, p=[0.67, 0.33]),
            "race": rng.choice(["White", "Black", "Other"], n, p=[0.85, 0.1, 0.05]),
            "probability": 1 / (1 + np.exp(-logits)),
        }
    )


def write_run(run_dir, predictions: pl.DataFrame, threshold: float = 0.4):
    """The files 02_tuning leaves behind, built from ``predictions``."""
    labels = predictions[LABEL_COLUMN].to_numpy()
    probabilities = predictions["probability"].to_numpy()
    summary = {
        "best_trial": 1,
        "epochs": 3,
        "hyperparameters": {"n_blocks": 2, "learning_rate": 0.001},
        "train_rows": 32561,
        "fnlwgt": "drop",
        "threshold_policy": "max_f1",
        "final_training_seconds": 12.5,
    }
    metrics = compute_test_metrics(
        labels, probabilities, threshold, np.ones(len(labels))
    )
    metrics.update(headline="unweighted", model=summary)
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    predictions.write_parquet(run_dir / analysis.PREDICTIONS_FILE)
    manifest = {
        "format_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "threshold": threshold,
        "label": "income > 50K",
        "library_versions": {"python": "3.11"},
        "summary": summary,
    }
    (run_dir / "model" / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.fixture
def results(tmp_path):
    return analysis.load_results(write_run(tmp_path / "run", synthetic_predictions()))


@pytest.fixture(scope="module")
def settings():
    return load_settings(["budget=small"])


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -2, 2)
    depth = trial.suggest_int("depth", 1, 4)
    rate = trial.suggest_float("rate", 1e-4, 1e-2, log=True)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    for epoch in range(3):
        trial.report(-(x**2) - 0.1 * depth + epoch * 0.01, epoch)
    return -(x**2) - 0.1 * depth + 10 * rate + (0.05 if kind == "a" else 0.0)


def make_study(n_trials: int, objective=quadratic) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.set_user_attr("objective", "validation roc_auc")
    if n_trials:
        study.optimize(objective, n_trials=n_trials)
    return study


def plot_settings(max_plotted_params: int = 3):
    return OmegaConf.create({"max_plotted_params": max_plotted_params, "seed": 0})


def assert_png(saved, min_width: int = 400) -> None:
    assert isinstance(saved, analysis.SavedFigure), saved
    data = saved.path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert width >= min_width and height >= 250, (saved.path.name, width, height)
    assert saved._repr_png_() == data


# --- calibration, threshold, confusion matrix, groups -------------------------


def test_expected_calibration_error_is_zero_when_every_bin_matches():
    # Bin [0.2, 0.3): four records predicted 0.25, one positive; [0.7, 0.8): 0.75, 3/4.
    probabilities = np.array([0.25] * 4 + [0.75] * 4)
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert analysis.expected_calibration_error(labels, probabilities, 10) == 0.0


def test_expected_calibration_error_is_the_record_weighted_gap():
    # Six records at 0.9 with half positive (gap 0.4), two at 0.1 never (gap 0.1).
    probabilities = np.array([0.9] * 6 + [0.1] * 2)
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    expected = (6 * 0.4 + 2 * 0.1) / 8
    assert analysis.expected_calibration_error(
        labels, probabilities, 10
    ) == pytest.approx(expected)


def test_calibration_bins_put_a_probability_of_one_in_the_last_bin():
    bins = analysis.calibration_bins(np.array([1, 0, 1]), np.array([1.0, 0.0, 0.95]), 4)
    assert bins["records"].to_list() == [1, 0, 0, 2]
    assert bins["observed rate"].to_list() == [0.0, None, None, 1.0]
    with pytest.raises(ValueError, match="at least one bin"):
        analysis.calibration_bins(np.array([1]), np.array([0.5]), 0)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0)],
)
def test_wilson_interval_matches_published_values(successes, trials, low, high):
    got_low, got_high = analysis.wilson_interval(successes, trials)
    assert (float(got_low), float(got_high)) == pytest.approx((low, high), abs=1e-4)


def test_threshold_sweep_counts_a_probability_at_the_cut_as_positive():
    labels = np.array([1, 1, 0, 0])
    probabilities = np.array([0.9, 0.5, 0.5, 0.1])
    sweep = analysis.threshold_sweep(labels, probabilities, [0.5, 0.95])
    at_half, above_all = sweep.rows(named=True)
    assert at_half["precision"] == pytest.approx(2 / 3)
    assert at_half["recall"] == 1.0
    assert at_half["f1"] == pytest.approx(0.8)
    assert at_half["predicted >50K"] == 0.75
    assert (above_all["recall"], above_all["f1"], above_all["predicted >50K"]) == (
        0.0,
        0.0,
        0.0,
    )


def test_confusion_counts_at_the_threshold():
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.6, 0.4, 0.8])
    counts = analysis.confusion_counts(labels, probabilities, 0.4)
    assert counts.tolist() == [[1, 2], [0, 2]]


def test_group_table_rates_per_group(tmp_path):
    predictions = pl.DataFrame(
        {
            "source_line": [1, 2, 3, 4, 5, 6],
            LABEL_COLUMN: [1, 1, 0, 0, 1, 0],
            "sex": ["Male", "Male", "Male", "Male", "Female", "Female"],
            "race": ["White"] * 6,
            "probability": [0.9, 0.2, 0.6, 0.1, 0.7, 0.3],
        }
    )
    results = analysis.load_results(write_run(tmp_path, predictions, threshold=0.5))
    table = analysis.group_table(results)
    male, female, white = table.rows(named=True)
    assert male == {
        "attribute": "sex",
        "group": "Male",
        "records": 4,
        "actual >50K": 2,
        "actual rate": 0.5,
        "predicted rate": 0.5,
        "TPR": 0.5,
        "FPR": 0.5,
    }
    assert (female["TPR"], female["FPR"], female["predicted rate"]) == (1.0, 0.0, 0.5)
    assert (white["records"], white["TPR"]) == (6, round(2 / 3, 3))


def test_describe_threshold_names_value_policy_and_where_it_was_chosen(
    results, settings
):
    text = analysis.describe_threshold(results, settings).text
    assert "**0.400**" in text
    assert "`max_f1`" in text
    assert "validation predictions of trial 1" in text


def test_describe_threshold_gives_the_cost_ratio(results):
    settings = OmegaConf.create(
        {"threshold": {"policy": "cost_ratio", "cost_ratio": 3.0}}
    )
    results.manifest["summary"]["threshold_policy"] = "cost_ratio"
    text = analysis.describe_threshold(results, settings).text
    assert "cost_ratio 3 " in text and "false negatives" in text


def test_load_results_says_what_to_run_when_the_run_is_incomplete(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebooks/02_tuning"):
        analysis.load_results(tmp_path)


# --- figures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plot", "name"),
    [
        (lambda r: analysis.plot_roc_and_pr(r, r.run_dir), "roc_pr_curves"),
        (lambda r: analysis.plot_calibration(r, r.run_dir, 10), "calibration"),
        (lambda r: analysis.plot_threshold(r, r.run_dir), "threshold"),
        (lambda r: analysis.plot_confusion_matrix(r, r.run_dir), "confusion_matrix"),
        (lambda r: analysis.plot_group_rates(r, r.run_dir), "group_rates"),
    ],
)
def test_each_result_figure_is_saved_as_png_under_figures(results, plot, name):
    saved = plot(results)
    assert saved.path == results.run_dir / "figures" / f"{name}.png"
    assert_png(saved)


def test_figures_are_closed_after_saving(results):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    analysis.plot_roc_and_pr(results, results.run_dir)
    analysis.plot_optimization_history(make_study(3), results.run_dir)
    assert len(plt.get_fignums()) == before


def test_list_figures_names_every_png(results):
    analysis.plot_threshold(results, results.run_dir)
    analysis.plot_confusion_matrix(results, results.run_dir)
    note = analysis.list_figures(results.run_dir)
    assert note.text.startswith("2 figures")
    assert "`figures/confusion_matrix.png`" in note.text


# --- the study ----------------------------------------------------------------


def test_study_summary_counts_trials_by_state():
    def sometimes_pruned(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise RuntimeError("a failing trial")
        return x

    study = make_study(0)
    study.optimize(sometimes_pruned, n_trials=4, catch=(RuntimeError,))
    row = analysis.study_summary(study).row(0, named=True)
    assert (row["trials"], row["complete"], row["pruned"], row["failed"]) == (
        4,
        2,
        1,
        1,
    )
    best = max(t.value for t in study.trials if t.value is not None)
    assert row["best score"] == round(best, 3)
    assert row["objective"] == "validation roc_auc"


@pytest.mark.parametrize(
    ("n_trials", "same_params", "message"),
    [
        (0, False, "at least 2 complete trials; study .* has 0"),
        (1, False, "at least 2 complete trials; study .* has 1"),
        (2, True, "all 2 complete trials used the same values"),
    ],
)
def test_too_small_a_study_gets_a_note_instead_of_importances(
    tmp_path, n_trials, same_params, message
):
    study = make_study(0)
    for _ in range(n_trials):
        if same_params:
            study.enqueue_trial({"x": 0.5, "depth": 2, "rate": 0.001, "kind": "a"})
        study.optimize(quadratic, n_trials=1)
    note = analysis.plot_param_importances(study, tmp_path, plot_settings())
    assert isinstance(note, analysis.Note)
    assert re.search(message, note.text), note.text
    assert analysis.param_importances(study, seed=0) == {}
    assert not (tmp_path / "figures").exists()


def test_an_empty_study_gets_notes_for_every_study_plot(tmp_path):
    study = make_study(0)
    notes = [
        analysis.plot_optimization_history(study, tmp_path),
        analysis.plot_learning_curves(study, tmp_path),
        analysis.plot_parallel_coordinates(study, tmp_path, plot_settings()),
        analysis.plot_slices(study, tmp_path, plot_settings()),
    ]
    assert all(isinstance(note, analysis.Note) for note in notes)


def test_two_varied_trials_give_every_study_figure(tmp_path):
    study = make_study(2)
    figures = [
        analysis.plot_optimization_history(study, tmp_path),
        analysis.plot_learning_curves(study, tmp_path),
        analysis.plot_param_importances(study, tmp_path, plot_settings()),
        analysis.plot_parallel_coordinates(study, tmp_path, plot_settings()),
        analysis.plot_slices(study, tmp_path, plot_settings()),
    ]
    for saved in figures:
        assert_png(saved)


def test_ranked_params_put_the_parameter_that_drives_the_score_first():
    study = make_study(40)
    ranked = analysis.ranked_params(study, limit=2, seed=0)
    assert len(ranked) == 2
    assert ranked[0] == "x"


# --- feature importance and attention (a real, tiny trained artifact) ---------


@pytest.fixture(scope="module")
def artifact(trained_artifact_dir):
    from lib.artifact import load_artifact

    return load_artifact(trained_artifact_dir)


@pytest.fixture(scope="module")
def test_frame(prepared_run_dir):
    from lib.data import read_prepared

    return read_prepared(prepared_run_dir).test


def quick(rows: int = 600, repeats: int = 2):
    return OmegaConf.create(
        {
            "permutation_rows": rows,
            "permutation_repeats": repeats,
            "attention_rows": rows,
            "seed": 5,
        }
    )


def test_permutation_importance_scores_every_input_column_once(artifact, test_frame):
    importance = analysis.permutation_importance(artifact, test_frame, quick())
    table = importance.table
    assert sorted(table["feature"]) == sorted(
        artifact.categorical_columns + artifact.numeric_columns
    )
    assert (importance.rows, importance.repeats) == (600, 2)
    assert 0.5 < importance.baseline_roc_auc <= 1.0
    drops = table["ROC-AUC drop"].to_list()
    assert drops == sorted(drops, reverse=True)


def test_shuffling_a_constant_column_costs_nothing(artifact, test_frame):
    constant = test_frame.with_columns(
        pl.lit("United-States").alias("native_country"), pl.lit(40).alias("age")
    )
    table = analysis.permutation_importance(artifact, constant, quick()).table
    by_feature = dict(zip(table["feature"], table["ROC-AUC drop"], strict=True))
    assert by_feature["native_country"] == 0.0
    assert by_feature["age"] == 0.0


def test_permutation_importance_is_reproducible_with_its_seed(artifact, test_frame):
    first = analysis.permutation_importance(artifact, test_frame, quick(300, 1))
    second = analysis.permutation_importance(artifact, test_frame, quick(300, 1))
    assert first.table.equals(second.table)


def test_permutation_importance_refuses_zero_repeats(artifact, test_frame):
    with pytest.raises(ValueError, match="permutation_repeats must be >= 1"):
        analysis.permutation_importance(artifact, test_frame, quick(300, 0))


def test_attention_rows_are_distributions_over_the_columns(
    artifact, test_frame, tmp_path
):
    attention = analysis.attention_by_column(artifact, test_frame, quick(300))
    n_tokens = len(artifact.categorical_columns) + len(artifact.numeric_columns)
    assert attention.tokens == artifact.categorical_columns + artifact.numeric_columns
    assert attention.matrix.shape == (n_tokens, n_tokens)
    assert np.allclose(attention.matrix.sum(axis=1), 1.0, atol=1e-4)
    assert attention.received["mean attention received"].sum() == pytest.approx(1.0)
    assert_png(analysis.plot_attention(attention, tmp_path))


def test_token_names_refuse_a_layout_they_do_not_know(artifact):
    n_categorical = len(artifact.categorical_columns)
    assert analysis.token_names(artifact, n_categorical) == artifact.categorical_columns
    with pytest.raises(ValueError, match="sees 3 tokens"):
        analysis.token_names(artifact, 3)


# --- the model card -----------------------------------------------------------


def test_the_model_card_is_written_with_every_section(results, settings):
    importance = analysis.PermutationImportance(
        pl.DataFrame(
            {
                "feature": ["capital_gain", "age"],
                "kind": ["numeric", "numeric"],
                "ROC-AUC drop": [0.05, 0.01],
                "spread (sd)": [0.001, 0.001],
            }
        ),
        baseline_roc_auc=0.9,
        rows=500,
        repeats=2,
    )
    analysis.plot_calibration(results, results.run_dir, 10)
    note = analysis.write_model_card(results, make_study(2), settings, importance)
    written = (results.run_dir / "model_card.md").read_text()
    assert written == note.text
    for heading in (
        "# Model card",
        "## Data",
        "## Training",
        "## Test metrics",
        "## Decision threshold",
        "## Results by sex and race",
        "## What the model relies on",
        "## Intended use and limits",
        "## Figures",
    ):
        assert f"\n{heading}" in "\n" + written, heading
    assert "**0.400**" in written
    assert "| sex | Male |" in written
    assert "`capital_gain` (0.050)" in written
    assert "not a model input" in written
    assert "2 complete trials: a smoke-test budget" in written
    assert "[calibration](figures/calibration.png)" in written


def test_markdown_table_formats_numbers_and_escapes_pipes():
    frame = pl.DataFrame({"name": ["a|b"], "count": [12345], "rate": [0.12345]})
    assert analysis.markdown_table(frame).splitlines() == [
        "| name | count | rate |",
        "| --- | --- | --- |",
        "| a\\|b | 12,345 | 0.123 |",
    ]
    assert analysis.show(frame)._repr_markdown_() == analysis.markdown_table(frame)
