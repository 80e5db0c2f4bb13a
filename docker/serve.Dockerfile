# syntax=docker/dockerfile:1
# Serving image: SageMaker runs `docker run IMAGE serve`, which starts the model
# server (gunicorn, lib/serving) on port 8080 with the artifact in /opt/ml/model.
# Build from the project root: docker/build_and_push.sh TAG serve REPOSITORY
# (or: docker build -f docker/serve.Dockerfile -t adult-tabtransformer:serve .)
#
# Python 3.11 on Debian 12 (bookworm), the interpreter requirements.lock was made
# for, as in the project's other images.
FROM python:3.11-slim-bookworm

# MODEL_SERVER_HOST: the server binds loopback unless told otherwise; in the
# container it must listen on every interface for SageMaker to reach it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/program \
    PATH=/opt/program/bin:$PATH \
    KERAS_BACKEND=tensorflow \
    KERAS_HOME=/tmp/.keras \
    MODEL_SERVER_HOST=0.0.0.0 \
    SAGEMAKER_BIND_TO_PORT=8080 \
    SM_MODEL_DIR=/opt/ml/model

WORKDIR /opt/program

# Only what serving imports, each at the exact version of requirements.lock (the
# lock as a constraints file pins these and everything they pull in).
COPY requirements.lock /tmp/requirements.lock
RUN pip install --constraint /tmp/requirements.lock \
        tensorflow keras numpy polars Flask gunicorn hydra-core omegaconf PyYAML \
    && pip check \
    && rm /tmp/requirements.lock

COPY lib/ lib/
COPY --chmod=755 docker/serve bin/serve

# The server needs no write access: it reads the model and keeps worker
# heartbeats in /dev/shm. SageMaker mounts /opt/ml/model world-readable.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin model-server
USER model-server

EXPOSE 8080
# For `docker run` on a workstation; SageMaker polls /ping itself. Loading the
# model takes a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ping' % os.environ['SAGEMAKER_BIND_TO_PORT'], timeout=4)"]
CMD ["serve"]
