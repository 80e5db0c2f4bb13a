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
# # 00 Infrastructure
#
# Everything the later notebooks need before they start. In `local` mode that is a
# run folder on this machine and the study storage (a SQLite file inside the run
# folder unless `study.storage` says otherwise). In `sagemaker` mode it is the
# CloudFormation stack: the network, the Aurora MySQL cluster that holds the study,
# its secret, and the notebook instance; its outputs become settings of the run.

# %% tags=["parameters"]
MODE = "local"
RUN_DIR = ""
BUDGET = "default"
STUDY_NAME = "adult-tabtransformer"
OVERRIDES = []
DRY_RUN = False

# %%
from lib import notebook, storage
from lib.aws import workflow

settings, run_dir = notebook.start(globals(), "00_infrastructure")

# %% [markdown]
# ## Study storage, or the stack
#
# Locally the storage is opened once here so that a wrong URL, a missing secret or
# an unreachable database stops the run now, before any training starts. In
# `sagemaker` mode the stack is created or updated and its outputs (bucket, role,
# subnets, security group, database secret) become settings; with `DRY_RUN` the
# request is only logged.

# %%
if settings.mode == "local":
    study_storage = storage.create_storage(settings.study, run_dir)
    print("Study storage:", storage.resolve_storage_url(settings.study, run_dir))
else:
    settings = workflow.prepare_infrastructure(settings, dry_run=settings.dry_run)

# %% [markdown]
# ## The settings of this run
#
# Written to `settings.yaml` in the run folder, so the run can be reproduced.

# %%
print("Settings written to", notebook.save_settings(settings, run_dir))
