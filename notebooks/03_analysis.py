# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 Analysis
#
# How good is the model, and where does it fail? Everything here is computed from
# the study, from the predictions the final model made once on the 16,281 records
# of `adult.test`, and from the model artifact itself. Nothing is tuned on the test
# set. Every figure is also saved as PNG under `figures/` in the run folder, and
# the last step writes a model card, `model_card.md`, next to it.

# %% tags=["parameters"]
MODE = "local"
RUN_DIR = ""
BUDGET = "default"
STUDY_NAME = "adult-tabtransformer"
OVERRIDES = []
DRY_RUN = False

# %%
from lib import analysis, notebook

settings, run_dir = notebook.start(globals(), "03_analysis")
results = analysis.load_results(run_dir)
study = analysis.load_study(settings, run_dir)

# %% [markdown]
# ## The study
#
# How many trials ran, how they ended, and the best validation score. The score
# is on the validation split, which the trials were tuned against: it is not an
# estimate for new data (the test metrics below are).

# %% tags=["nbval-check-output"]
analysis.show(analysis.study_summary(study))

# %% [markdown]
# ### Optimisation history
#
# Each trial's validation score and the best so far. A curve still climbing at
# the end says the budget was too small.

# %%
analysis.plot_optimization_history(study, run_dir)

# %% [markdown]
# ### Learning curves
#
# The validation score after every epoch of every trial: where early stopping
# ended a trial, and where the pruner cut one that fell behind the median.

# %%
analysis.plot_learning_curves(study, run_dir)

# %% [markdown]
# ### Which hyperparameters mattered
#
# fANOVA importances: the share of the variation in the validation score that each
# hyperparameter explains across the complete trials. With few trials this is an
# anecdote, and the figure says so.

# %%
analysis.plot_param_importances(study, run_dir, settings.analysis)

# %% [markdown]
# ### Parallel coordinates and slices
#
# The leading hyperparameters side by side (one line per trial, coloured by
# score), then the score against each of them alone.

# %%
analysis.plot_parallel_coordinates(study, run_dir, settings.analysis)

# %%
analysis.plot_slices(study, run_dir, settings.analysis)

# %% [markdown]
# ## Test metrics
#
# Unweighted, and weighted by `fnlwgt` (the census sampling weight, so the figures
# describe the population rather than the sample). Accuracy and F1 are shown at
# the usual 0.5 cut and at the decision threshold chosen on validation data.

# %% tags=["nbval-check-output"]
analysis.show(analysis.metrics_table(results.metrics))

# %% [markdown]
# ## ROC and precision-recall curves
#
# About a quarter of the test records earn more than 50K, so the precision-recall
# curve is the stricter view. The markers are the two operating points: the
# decision threshold and 0.5.

# %%
analysis.plot_roc_and_pr(results, run_dir)

# %% [markdown]
# ## Calibration
#
# When the model says 0.7, do 70 % of those people earn more than 50K? The
# reliability diagram bins the predictions and compares each bin's mean
# prediction with the share observed; the expected calibration error (ECE) is the
# record-weighted mean gap. Bars are 95 % intervals of the observed share.

# %% tags=["nbval-check-output"]
analysis.show(analysis.calibration_summary(results, settings.analysis.calibration_bins))

# %%
analysis.plot_calibration(results, run_dir, settings.analysis.calibration_bins)

# %% [markdown]
# ## The decision threshold
#
# A probability becomes a label at the threshold chosen during the search, on
# validation data, by the policy in `threshold.policy` (`max_f1` by default, or
# `max_accuracy`, or `cost_ratio` when a missed high earner costs a given multiple
# of a false alarm). It travels with the model in `model/manifest.json`.

# %% tags=["nbval-check-output"]
analysis.describe_threshold(results, settings)

# %% [markdown]
# The test set only shows where that threshold lands: precision, recall and F1
# across every threshold, with the chosen one marked. Picking the best threshold
# here would tune on the test set, so it is not done.

# %%
analysis.plot_threshold(results, run_dir)

# %% [markdown]
# ## Confusion matrix at the decision threshold
#
# Every test record lands in one cell; each row shares out one actual class over
# what the model predicted for it.

# %%
analysis.plot_confusion_matrix(results, run_dir)

# %% [markdown]
# ## Results by sex and race
#
# The same threshold for everyone. Per group: how many records, the share that
# actually earns more than 50K, the share predicted so, the true positive rate
# (high earners found) and the false positive rate (others flagged). Gaps in TPR
# and FPR are what equalised-odds criteria look at; the small race groups have
# wide intervals, drawn in the figure.

# %% tags=["nbval-check-output"]
analysis.show(analysis.group_table(results))

# %%
analysis.plot_group_rates(results, run_dir)

# %% [markdown]
# ## Feature importance
#
# Permutation importance: shuffle one input column across test records, breaking
# its link to the label, and measure how much ROC-AUC drops. Correlated columns
# (`education` and `education_num`; `relationship` and `marital_status`) share
# credit, so each looks less important than the information it carries.

# %%
artifact = analysis.load_model(run_dir)
test = analysis.load_test_frame(settings, run_dir)

# %%
importance = analysis.permutation_importance(artifact, test, settings.analysis)
analysis.plot_permutation_importance(importance, run_dir)

# %% [markdown]
# ### Attention per column
#
# The attention weights of the first transformer block, averaged over heads and
# test rows: which columns each column looks at. Attention shows where the model
# looks, not what decides the prediction (later blocks and the MLP mix the tokens
# again); read it next to the permutation importance.

# %%
attention = analysis.attention_by_column(artifact, test, settings.analysis)
analysis.plot_attention(attention, run_dir)

# %% [markdown]
# ## Model card
#
# Data, training, metrics, threshold, group results and limits in one page,
# written to `model_card.md` in the run folder.

# %%
analysis.write_model_card(results, study, settings, importance)

# %% [markdown]
# ## Figures written by this notebook

# %% tags=["nbval-check-output"]
analysis.list_figures(run_dir)
