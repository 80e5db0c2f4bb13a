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
# the predictions the final model made once on the 16,281 records of `adult.test`
# and from the study. Figures are also saved as PNG under `figures/` in the run.

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
metrics, predictions = analysis.load_results(run_dir)

# %% [markdown]
# ## Test metrics
#
# Unweighted, and weighted by `fnlwgt` (the census sampling weight, so the figures
# describe the population rather than the sample). Accuracy is shown at the usual
# 0.5 cut and at the decision threshold chosen on validation data.

# %%
analysis.metrics_table(metrics)

# %% [markdown]
# ## ROC and precision-recall curves

# %%
analysis.plot_roc_and_pr(predictions, run_dir)
