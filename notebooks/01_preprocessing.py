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
# # 01 Preprocessing
#
# Reads the UCI Adult files exactly as published, checks each against its SHA-256,
# parses them with an explicit schema and accounts for every line: each one is
# kept as a record or dropped with a reason. A stratified validation set is cut
# out of `adult.data`; `adult.test` is kept aside for the final evaluation only.

# %% tags=["parameters"]
MODE = "local"
RUN_DIR = ""
BUDGET = "default"
STUDY_NAME = "adult-tabtransformer"
OVERRIDES = []
DRY_RUN = False

# %%
import polars as pl
from IPython.display import display

from lib import data, notebook
from lib.aws import workflow

settings, run_dir = notebook.start(globals(), "01_preprocessing")

# %% [markdown]
# ## Load, verify, parse and split
#
# In `sagemaker` mode the same code runs as a processing job on the raw files
# uploaded to S3, and its outputs (the parquet files and the row ledger) stay in
# S3; the tables below are shown in `local` mode.

# %%
if settings.mode == "local":
    prepared = data.prepare_data(settings, run_dir)
else:
    job = workflow.run_preprocessing(settings, dry_run=settings.dry_run)

# %% [markdown]
# ## The row ledger
#
# Lines read, records kept, and every dropped line with its reason. The published
# counts are 32,561 training and 16,281 test records.

# %%
if settings.mode == "local":
    display(data.ledger_table(prepared.ledger))
    display(pl.DataFrame(prepared.ledger["split"], orient="row"))

# %% [markdown]
# ## Label balance and missing values
#
# About a quarter of the people earn more than 50K in every split. Missing values
# (`?` in the files) occur only in `workclass`, `occupation` and `native_country`;
# they are kept as a category of their own.

# %%
if settings.mode == "local":
    display(data.split_summary(prepared))
    display(prepared.train.head(5))
