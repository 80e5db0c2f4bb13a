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

from lib import data, notebook

settings, run_dir = notebook.start(globals(), "01_preprocessing")

# %% [markdown]
# ## Load, verify, parse and split

# %%
prepared = data.prepare_data(settings, run_dir)

# %% [markdown]
# ## The row ledger
#
# Lines read, records kept, and every dropped line with its reason. The published
# counts are 32,561 training and 16,281 test records.

# %%
data.ledger_table(prepared.ledger)

# %%
pl.DataFrame(prepared.ledger["split"], orient="row")

# %% [markdown]
# ## Label balance and missing values
#
# About a quarter of the people earn more than 50K in every split. Missing values
# (`?` in the files) occur only in `workclass`, `occupation` and `native_country`;
# they are kept as a category of their own.

# %%
data.split_summary(prepared)

# %%
prepared.train.head(5)
