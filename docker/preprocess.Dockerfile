# Preprocessing image: runs lib.data (01_preprocessing) as a SageMaker processing job.
# Build from the project root: docker/build_and_push.sh TAG preprocess REPOSITORY
#
# Python 3.11 on Debian 12 (bookworm), the interpreter requirements.lock was made for.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/project

WORKDIR /opt/project

# Only what preprocessing imports, each at the exact version of requirements.lock
# (the lock as a constraints file pins these and everything they pull in).
COPY requirements.lock /tmp/requirements.lock
RUN pip install --constraint /tmp/requirements.lock \
        polars numpy hydra-core omegaconf PyYAML \
    && rm /tmp/requirements.lock

COPY lib/ lib/

# SageMaker processing runs the container as root and mounts /opt/ml/processing
# owned by root, so the image keeps the root user.
ENTRYPOINT ["python", "-m", "lib.aws.processing_entry"]
CMD ["--help"]
