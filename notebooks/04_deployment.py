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
# # 04 Deployment
#
# The model artifact is served under the SageMaker inference contract: `GET /ping`
# and `POST /invocations` on port 8080, CSV or JSON in, a probability and a label
# per record out. In `local` mode the same `serve` program that runs in the
# container starts here in its own process on loopback; it is sent lines of
# `adult.test` as CSV and the same records as JSON, and its answers must equal the
# offline predictions of the artifact. In `sagemaker` mode the model becomes a
# SageMaker model (serving image + artifact from the final training job), an
# endpoint configuration and an endpoint, which gets a test invocation.

# %% tags=["parameters"]
MODE = "local"
RUN_DIR = ""
BUDGET = "default"
STUDY_NAME = "adult-tabtransformer"
OVERRIDES = []
DRY_RUN = False

# %%
from IPython.display import display

from lib import deployment, notebook
from lib.aws import workflow

settings, run_dir = notebook.start(globals(), "04_deployment")

# %% [markdown]
# ## Serve, invoke, compare
#
# The server is stopped when the comparison is done, whatever its outcome.

# %%
if settings.mode == "local":
    display(deployment.compare_with_offline(settings, run_dir, n_records=500))
else:
    endpoint = workflow.deploy_and_try_endpoint(
        settings,
        run_dir,
        deployment.raw_test_records(settings, count=5),
        dry_run=settings.dry_run,
    )

# %% [markdown]
# ## Clean up (sagemaker)
#
# An endpoint bills by the hour; it is deleted after the test invocation unless
# `aws.hosting.delete_after_test=false`.

# %%
if settings.mode == "sagemaker" and settings.aws.hosting.delete_after_test:
    workflow.remove_endpoint(settings, dry_run=settings.dry_run)
