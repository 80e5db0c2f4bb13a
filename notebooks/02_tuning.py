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
# # 02 Tuning
#
# An Optuna study searches the TabTransformer's hyperparameters. Each trial trains
# on the training split and is scored on the validation split after every epoch;
# the median pruner stops trials that fall behind, and early stopping ends a trial
# once validation stops improving. The study lives in a database, so an
# interrupted search continues where it stopped and several workers can share it.
#
# The best configuration is then retrained once on training + validation, for the
# number of epochs its trial found best, and evaluated once on `adult.test`.

# %% tags=["parameters"]
MODE = "local"
RUN_DIR = ""
BUDGET = "default"
STUDY_NAME = "adult-tabtransformer"
OVERRIDES = []
DRY_RUN = False

# %%
from IPython.display import display

from lib import notebook, storage, tuning
from lib.aws import workflow

settings, run_dir = notebook.start(globals(), "02_tuning")

# %% [markdown]
# ## The search
#
# The first trial trains the default configuration from
# `lib/conf/tf_keras/tabtransformer.yaml`; the seeded TPE sampler proposes the rest.
# In `sagemaker` mode the trials run in training jobs (spot instances, checkpoints in
# `/opt/ml/checkpoints`) that share the study in Aurora MySQL; a final job then
# retrains the best configuration and its model and metrics are downloaded here.

# %%
if settings.mode == "local":
    study_storage = storage.create_storage(settings.study, run_dir)
    study = tuning.create_study(settings, study_storage)
    study = tuning.optimize(settings, study, settings.budget.n_trials, run_dir)
    display(tuning.trials_table(study))
else:
    jobs = workflow.run_tuning_and_final_training(
        settings, run_dir, dry_run=settings.dry_run
    )

# %% [markdown]
# ## The final model
#
# Retrained on all 32,561 training records, saved with its preprocessing and
# decision threshold as one artifact, then scored on the 16,281 test records
# (in `sagemaker` mode, the final training job did this).

# %%
if settings.mode == "local":
    metrics = tuning.train_final_model(settings, study, run_dir)
    display(tuning.headline_table(metrics))
